"""Finding 8 of the cluster day-one review: executor pods go in the driver pod's namespace and are owned by
it (Spark's defaults are namespace `default` and no owner, so executors outlive a failed driver)."""

from simrec.infra.spark import driver_pod_settings


def test_the_driver_pods_fields_become_spark_settings() -> None:
    environ = {
        "SIMREC_POD_IP": "10.1.2.3",
        "SIMREC_POD_NAMESPACE": "team-vision",
        "SIMREC_POD_NAME": "train-x",
    }
    assert driver_pod_settings(environ) == {
        "spark.driver.host": "10.1.2.3",
        "spark.driver.bindAddress": "0.0.0.0",
        "spark.kubernetes.namespace": "team-vision",
        "spark.kubernetes.driver.pod.name": "train-x",
    }


def test_a_local_session_gets_none_of_them() -> None:
    assert driver_pod_settings({}) == {}
