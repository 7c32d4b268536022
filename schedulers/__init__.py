"""perfjax.schedulers: search strategies (ask/tell) and domain schedulers."""
