"""Reference simulators: slow, explicit, and independent of the models they check."""
