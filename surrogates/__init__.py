"""perfjax.surrogates: learned and statistical models over a Space's feature embedding."""
