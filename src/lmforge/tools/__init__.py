"""Tools that look at a model from outside: `inspect` (attention maps, the logit lens)."""
