"""The worker side of the fleet: the Celery app, delivery passes and the dispatcher."""
