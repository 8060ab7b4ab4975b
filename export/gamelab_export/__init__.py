"""gamelab_export: the toolchain that turns captioned images into SDK model bundles.

Imports the SDK (``gamelab_caption``) for preprocessing and tokenisation; never the reverse.
"""
