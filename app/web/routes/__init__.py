"""Route modules: api (JSON, SPEC §8), pages (HTML); admin (jobs) is added next to them."""
