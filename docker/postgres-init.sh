#!/usr/bin/env bash
# One PostgreSQL server, one role and database per consumer. The official postgres image runs this
# once, when its data volume is empty (/docker-entrypoint-initdb.d); passwords come from the
# container's environment (docker/.env), never from this file.
#
#   airflow    Airflow metadata + Celery result backend     role airflow
#   mlflow     MLflow tracking and model registry           role mlflow
#   autopilot  autopilot state: alias history, locks, ...   role autopilot
#   optuna     Optuna studies (own database: MLflow and Optuna both keep `alembic_version`)
#   inference  the serving endpoint's inference log and feedback labels
set -euo pipefail

: "${AIRFLOW_DB_PASSWORD:?set AIRFLOW_DB_PASSWORD}"
: "${MLFLOW_DB_PASSWORD:?set MLFLOW_DB_PASSWORD}"
: "${AUTOPILOT_DB_PASSWORD:?set AUTOPILOT_DB_PASSWORD}"

# psql variables (:"name" quotes an identifier, :'name' a literal), so a password is never spliced
# into SQL text by the shell; and psql reads each password from the environment itself
# (`\getenv`, psql 15+), so it is never an argument of any process either (`ps` shows arguments).
create_role() {  # $1: the role, $2: the NAME of the environment variable holding its password
    psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
        --set=role="$1" --set=password_env="$2" <<'SQL'
\getenv password :password_env
CREATE ROLE :"role" LOGIN PASSWORD :'password';
SQL
}

create_database() {
    psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
        --set=db="$1" --set=owner="$2" <<'SQL'
CREATE DATABASE :"db" OWNER :"owner";
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
SQL
}

create_role airflow AIRFLOW_DB_PASSWORD
create_role mlflow MLFLOW_DB_PASSWORD
create_role autopilot AUTOPILOT_DB_PASSWORD

create_database airflow airflow
create_database mlflow mlflow
create_database autopilot autopilot
create_database optuna autopilot
create_database inference autopilot
