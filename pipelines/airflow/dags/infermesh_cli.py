"""What the infermesh DAGs share: Jinja for Airflow Variables with defaults, and the CLI's
registry flags (MLflow when `infermesh_tracking_uri` is set, else the local registry).
Airflow puts the DAG folder on sys.path, so the DAG files import this module by name.
"""


def var(name, default):
    """The Airflow Variable `name`, or `default` when it is not set (rendered at run time)."""
    return "{{ var.value.get('" + name + "', '" + default + "') }}"


BIN = var("infermesh_bin", "infermesh")
URI = var("infermesh_tracking_uri", "")
REGISTRY = var("infermesh_registry", "run/registry")
# Registry flags for `infermesh register|promote`.
REG_FLAGS = (
    '$( [ -n "' + URI + '" ] && echo --tracking-uri "' + URI + '" '
    '|| echo --registry "' + REGISTRY + '" )'
)
