"""Rollouts and metrics defined as PDEBench defines them, and the variants compared."""
