"""CRCGS training: the Accelerate entry point `train.py`, its stages and the shipped configs.

A repository folder, not installed: run `accelerate launch training/train.py ...` from the repository
root.
"""
