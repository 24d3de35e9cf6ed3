"""Load scikit-learn's bundled digits, scale pixels to [0, 1] and split train/test."""

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from quipu import sdk


def main() -> None:
    config = sdk.get_config()
    digits = load_digits()  # ships inside scikit-learn: nothing is downloaded
    features = (digits.data / 16.0).astype(np.float32)
    labels = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        features, labels, test_size=config["test_fraction"], random_state=config["seed"],
        stratify=labels)
    sdk.save_output("train_features", x_train)
    sdk.save_output("train_labels", y_train)
    sdk.save_output("test_features", x_test)
    sdk.save_output("test_labels", y_test)
    sdk.runtime_log(f"{len(y_train)} training and {len(y_test)} test images")
    sdk.finish()


if __name__ == "__main__":
    main()
