"""Evaluation: clean accuracy and PGD on fixed, seeded subsets (`robustness`), and when to measure
(`schedule`)."""
