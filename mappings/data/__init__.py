"""Data files shipped with the package: built-in scales, the sample framework."""
