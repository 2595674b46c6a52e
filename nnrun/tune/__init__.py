"""`nnrun tune`: a search over the config's tune.space with optuna (an optional extra),
many trials per compiled program (the sweep machinery); see nnrun/tune/search.py."""
