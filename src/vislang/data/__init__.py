"""Data: the generated visual world, real image datasets, and the file formats training reads."""
