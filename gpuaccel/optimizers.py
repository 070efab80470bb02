"""Optimizers: configuration only; the fused update runs in C on the device."""


class Optimizer:
    kind = None

    def get_config(self):
        raise NotImplementedError

    def _args(self):
        """(kind, lr, momentum, beta1, beta2, eps, weight_decay, nesterov) for Net.set_optimizer."""
        raise NotImplementedError

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.get_config().items())})"


class SGD(Optimizer):
    """SGD with optional (Nesterov) momentum and L2 weight decay, PyTorch's form:
    v = momentum v + (g + wd w); w -= lr v (or lr (g' + momentum v) with Nesterov)."""

    kind = "sgd"

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, weight_decay=0.0):
        if learning_rate < 0 or not 0 <= momentum < 1 or weight_decay < 0:
            raise ValueError("need learning_rate >= 0, 0 <= momentum < 1, weight_decay >= 0")
        self.learning_rate, self.momentum = float(learning_rate), float(momentum)
        self.nesterov, self.weight_decay = bool(nesterov), float(weight_decay)

    def get_config(self):
        return {"learning_rate": self.learning_rate, "momentum": self.momentum, "nesterov": self.nesterov,
                "weight_decay": self.weight_decay}

    def _args(self):
        return ("sgd", self.learning_rate, self.momentum, 0.0, 0.0, 0.0, self.weight_decay, self.nesterov)


class Adam(Optimizer):
    """Adam with bias correction; epsilon defaults to Keras's 1e-7."""

    kind = "adam"

    def __init__(self, learning_rate=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-7, weight_decay=0.0):
        if learning_rate < 0 or not (0 <= beta_1 < 1 and 0 <= beta_2 < 1) or epsilon <= 0 or weight_decay < 0:
            raise ValueError("need learning_rate >= 0, 0 <= beta_1, beta_2 < 1, epsilon > 0, weight_decay >= 0")
        self.learning_rate, self.beta_1, self.beta_2 = float(learning_rate), float(beta_1), float(beta_2)
        self.epsilon, self.weight_decay = float(epsilon), float(weight_decay)

    def get_config(self):
        return {"learning_rate": self.learning_rate, "beta_1": self.beta_1, "beta_2": self.beta_2,
                "epsilon": self.epsilon, "weight_decay": self.weight_decay}

    def _args(self):
        return ("adam", self.learning_rate, 0.0, self.beta_1, self.beta_2, self.epsilon, self.weight_decay, False)


_BY_NAME = {"sgd": SGD, "adam": Adam}


def get(identifier):
    """An Optimizer from an instance, a name ('adam', 'sgd') or a {'class': ..., 'config': ...} dict."""
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, str) and identifier.lower() in _BY_NAME:
        return _BY_NAME[identifier.lower()]()
    if isinstance(identifier, dict) and identifier.get("class", "").lower() in _BY_NAME:
        return _BY_NAME[identifier["class"].lower()](**identifier.get("config", {}))
    raise ValueError(f"unknown optimizer {identifier!r}: use 'adam', 'sgd' or an Optimizer instance")


def serialize(opt):
    return {"class": opt.kind, "config": opt.get_config()}
