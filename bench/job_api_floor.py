"""The floor of bench/job_api.py: plain FastAPI answering the job API's JSON from memory.

The bench writes the service's own answers to the file named by JOB_API_FLOOR_DATA
({"jobs": {id: job}, "page": page}); each route returns them as stored, with no
database, no key and no response model.
"""

import json
import os
from pathlib import Path

from fastapi import FastAPI, HTTPException

_answers = json.loads(Path(os.environ["JOB_API_FLOOR_DATA"]).read_text())
app = FastAPI()


@app.get("/jobs")
async def list_jobs() -> dict:
    return _answers["page"]


@app.get("/jobs/{job_id}")
async def get_job(job_id: str) -> dict:
    job = _answers["jobs"].get(job_id)
    if job is None:
        raise HTTPException(404, "no such job")
    return job
