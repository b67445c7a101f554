"""CT data: reading, geometry, sparsification, datasets, phantoms and the preprocessing cache."""
