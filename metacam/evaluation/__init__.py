"""The evaluation engine: how MetaCAM scores saliency maps (placeholder, filled below)."""
