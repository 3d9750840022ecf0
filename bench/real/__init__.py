"""The real-checkpoint row: SmolLM2-135M-Instruct taught a few world subjects, then edited."""
