"""Layer 0: what every other layer may use and nothing here imports from above.

Errors, atomic IO (write/lock/YAML/JSON), the pickle trust gate, thread limits, metrics
(MAE/RMSE/softening scale) and the parallel executor.
"""
