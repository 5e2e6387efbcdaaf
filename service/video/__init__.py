"""Temporally consistent video colorization (torch-free): decode, shots, anchored flow, encode."""
