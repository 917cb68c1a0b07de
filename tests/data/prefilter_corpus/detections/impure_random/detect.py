import random


def detect(r):
    return r.deepget("event.action") == "StopLogging" and random.random() >= 0
