"""The Celery worker: runs training jobs."""
