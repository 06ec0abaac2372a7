"""midistyle: style transfer for two-hand piano rolls."""
__version__ = "0.1.0"
