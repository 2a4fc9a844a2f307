"""Scoring: text normalisation, ASR WER/CER, TTS judge scoring and RESULTS.md gathering."""
