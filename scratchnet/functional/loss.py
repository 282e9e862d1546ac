"""(being written by the functional-ops helper)"""
def cross_entropy(*a, **k): raise NotImplementedError
def mse_loss(*a, **k): raise NotImplementedError
def nll_loss(*a, **k): raise NotImplementedError
