"""Data: real PDE solvers, PDEBench HDF5 readers/writers, splits, normalisation, torch views."""
