"""CRCGS training: the Accelerate entry point `train.py`, its stages and the shipped configs.

Installed with the package (`pip install -e .`), so `accelerate launch training/train.py ...` imports
`training.*` from any folder; the shipped configs are read by path (`training/configs/*.yaml`).
"""
