"""Arguments of `simrec train` for tests: the CLI requires every hyperparameter (the defaults live only in
components/train/component.yaml), so tests start from the component's defaults as the pipeline does."""

from simrec.train.params import TrainParams, train_component_defaults


def hyperparameter_flags(**overrides: object) -> list[str]:
    """--name value for every hyperparameter and the validation fraction, the component's defaults but
    `overrides`."""
    values = TrainParams.component_defaults(**overrides).model_dump()
    values["validation_fraction"] = train_component_defaults()["validation_fraction"]
    return [part for name, value in values.items() for part in (f"--{name.replace('_', '-')}", str(value))]
