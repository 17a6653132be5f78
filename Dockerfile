FROM python:3.11-slim
WORKDIR /app
COPY . /app
RUN pip install --no-cache-dir -e '.[test]'
ENV FHIR_DATA_DIR=/data FHIR_HOST=0.0.0.0 FHIR_PORT=8080
VOLUME /data
EXPOSE 8080
CMD ["fhir-server", "serve"]
