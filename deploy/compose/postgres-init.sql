-- The Prefect server's own database, beside the state DB (POSTGRES_DB=mlops). Run once by the postgres image
-- on an empty data volume (/docker-entrypoint-initdb.d); owned by the same role (POSTGRES_USER).
CREATE DATABASE prefect OWNER mlops;
