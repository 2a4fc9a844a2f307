"""The reliability and security suite (issue 9): bad inputs, faults, untrusted files, fuzzing.

RELIABILITY.md at the top of the repository summarises what each test tries and what happened.
"""
