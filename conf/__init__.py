"""The Hydra configs of ``metacam sweep``, shipped as package data (``metacam.conf``)."""
