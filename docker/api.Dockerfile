# The light image: API, migrations, dashboard and client commands. No torch: app/ never imports it.
FROM python:3.11-slim
WORKDIR /srv
COPY pyproject.toml README.md ./
COPY app ./app
COPY migrations ./migrations
COPY selector ./selector
COPY workers ./workers
RUN pip install --no-cache-dir --no-deps . \
 && pip install --no-cache-dir fastapi uvicorn "sqlalchemy>=2" alembic "pydantic>=2" pydantic-settings \
      "psycopg[binary]" httpx typer rich tqdm pyyaml optuna optuna-dashboard
EXPOSE 8000
CMD ["surgical", "serve", "--host", "0.0.0.0", "--port", "8000"]
