from checks import is_admin_action


def detect(r):
    return is_admin_action(r)
