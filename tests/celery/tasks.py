"""The platform's Celery side of fraud alert emails, as the tests run it: an unmodified Celery
5.7 worker on Redis with one task, `fraud.send_alert_email(alert)`, which "sends" the email by
appending the alert to the JSON-lines file named by INFERMESH_CELERY_OUTBOX.

Run: celery -A tasks worker (from this folder), with INFERMESH_CELERY_BROKER the Redis URL.
"""
import json
import os

from celery import Celery

app = Celery("infermesh-tests", broker=os.environ["INFERMESH_CELERY_BROKER"])
app.conf.worker_hijack_root_logger = False
app.conf.broker_connection_retry_on_startup = True


@app.task(name="fraud.send_alert_email")
def send_alert_email(alert):
    with open(os.environ["INFERMESH_CELERY_OUTBOX"], "a") as out:
        out.write(json.dumps({"to": "fraud-team@example.com", "alert": alert}) + "\n")
    return alert["alert_id"]
