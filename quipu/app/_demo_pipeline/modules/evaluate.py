"""Score the trained model on the held-out test split."""

import pickle

from quipu import sdk


def main() -> None:
    model = pickle.loads(sdk.get_input_path("model").read_bytes())
    x = sdk.load_input("features")
    y = sdk.load_input("labels")
    accuracy = float((model.predict(x) == y).mean())
    sdk.log_metric("accuracy", accuracy)
    sdk.save_output("report", {"accuracy": accuracy, "test_images": len(y)})
    sdk.finish()


if __name__ == "__main__":
    main()
