"""Tokenizers that turn text and audio into the ids of the joint vocabulary's blocks.

text.py       base-LM (Hugging Face) or sentencepiece text tokenizers
semantic.py   speech features + k-means -> semantic units (stream 0)
acoustic.py   codecs: waveform <-> residual codebook codes (streams 1..n_q)
"""
