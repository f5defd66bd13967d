-- One PostgreSQL server, one database per store.
CREATE DATABASE prefect;
CREATE DATABASE mlflow;
