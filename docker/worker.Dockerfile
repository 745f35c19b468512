# The worker image: torch with CUDA, the engine and the built-in data.
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime
WORKDIR /srv
COPY pyproject.toml README.md ./
COPY app ./app
COPY migrations ./migrations
COPY selector ./selector
COPY workers ./workers
RUN pip install --no-cache-dir .
CMD ["surgical", "worker", "--device", "cuda"]
