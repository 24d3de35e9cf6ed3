"""Fit a one-hidden-layer MLP epoch by epoch, logging loss and training accuracy."""

import pickle

import numpy as np
from sklearn.neural_network import MLPClassifier

from quipu import sdk


def main() -> None:
    config = sdk.get_config()
    x = sdk.load_input("features")
    y = sdk.load_input("labels")
    model = MLPClassifier(hidden_layer_sizes=(config["hidden"],), alpha=config["alpha"],
                          learning_rate_init=config["learning_rate"],
                          random_state=config["seed"])
    classes = np.unique(y)
    for epoch in range(config["epochs"]):
        model.partial_fit(x, y, classes=classes)
        accuracy = float((model.predict(x) == y).mean())
        sdk.log_metrics({"loss": model.loss_, "train_accuracy": accuracy}, step=epoch)
        sdk.heartbeat(f"epoch {epoch}")
        if sdk.should_stop():
            break
    sdk.save_output("model", pickle.dumps(model), artifact=True)
    sdk.finish()


if __name__ == "__main__":
    main()
