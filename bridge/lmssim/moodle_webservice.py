"""The simulator's ``core_webservice`` function: ``core_webservice_get_site_info``.

What a client learns of the site and of its token (observed on Moodle 4.3, Build 20231009):
the site's name and release, the token's user, and the ``functions`` (name, version) of the
token's service — the cheap call a client makes to check its token and what it may call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from typing import Any

from bridge.lmssim.moodle_ws import DEFAULT
from bridge.lmssim.moodle_ws import Functions
from bridge.lmssim.moodle_ws import Multiple
from bridge.lmssim.moodle_ws import Value

if TYPE_CHECKING:
    from bridge.lmssim.moodle import MoodleSite

FUNCTIONS = Functions()
RELEASE = "4.3 (Build: 20231009)"
VERSION = "2023100900"  # $version of Moodle 4.3; every core function reports it


@FUNCTIONS.register(
    "core_webservice_get_site_info",
    serviceshortnames=Multiple(Value("alphanumext"), DEFAULT, []),
)
def get_site_info(site: MoodleSite, params: dict[str, Any]) -> Any:
    admin = site.user_named("admin")
    assert admin is not None  # seeded, and core_user_delete_users refuses to delete it
    return {
        "sitename": site.sitename,
        "username": admin.username,
        "firstname": admin.firstname,
        "lastname": admin.lastname,
        "fullname": f"{admin.firstname} {admin.lastname}",
        "lang": "en",
        "userid": admin.id,
        "siteurl": site.wwwroot,
        "userpictureurl": f"{site.wwwroot}/theme/image.php/boost/core/1/u/f1",
        "functions": [
            {"name": name, "version": VERSION} for name in sorted(site.service_functions)
        ],
        "downloadfiles": 0,
        "uploadfiles": 0,
        "release": RELEASE,
        "version": VERSION,
        "mobilecssurl": "",
        "usercanmanageownfiles": True,
        "userquota": 0,
        "usermaxuploadfilesize": -1,
        "userhomepage": 1,
        "siteid": 1,
        "sitecalendartype": "gregorian",
        "usercalendartype": "gregorian",
        "userissiteadmin": True,
        "theme": "boost",
        "limitconcurrentlogins": 0,
    }
