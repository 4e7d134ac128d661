"""The emulator's login side: OAuth 2.0 token endpoint (three flows), SOAP login, sessions.

Access tokens expire after ``session_ttl`` seconds (or when a test calls ``expire_sessions``); a
request with an unknown or expired token gets 401 INVALID_SESSION_ID, as in Salesforce.
"""

from __future__ import annotations

import base64
import re
import secrets
import time
from dataclasses import dataclass, field
from html import unescape
from typing import Any
from urllib.parse import parse_qs

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

INSTANCE_URL = "https://nps-emulator.my.salesforce.com"
ORG_ID = "00DDx0000000001"


@dataclass
class Credentials:
    """What the emulated org accepts: one connected app and one integration user."""

    consumer_key: str = "3MVG9.emulator.consumer.key"
    consumer_secret: str = "emulator-consumer-secret"
    username: str = "integration@nps.example"
    password: str = "emulator-password"
    security_token: str = "EMUTOKEN"
    #: The My Domain the client-credentials flow and JWT audience may use.
    my_domain: str = "nps-emulator.my"
    private_key_pem: str = ""
    public_key_pem: str = ""

    def __post_init__(self) -> None:
        if not self.private_key_pem:
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            self.private_key_pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ).decode()
            self.public_key_pem = (
                key.public_key()
                .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
                .decode()
            )


@dataclass
class Sessions:
    credentials: Credentials
    session_ttl: float = 7200.0
    tokens: dict[str, float] = field(default_factory=dict)

    def issue(self) -> str:
        token = f"{ORG_ID}!AQ{secrets.token_urlsafe(24)}"
        self.tokens[token] = time.time() + self.session_ttl
        return token

    def valid(self, authorization: str | None) -> bool:
        if not authorization or not authorization.startswith("Bearer "):
            return False
        expires = self.tokens.get(authorization[len("Bearer ") :])
        return expires is not None and time.time() < expires

    def expire_all(self) -> None:
        self.tokens.clear()

    def token_response(self) -> dict[str, Any]:
        return {
            "access_token": self.issue(),
            "instance_url": INSTANCE_URL,
            "id": f"https://login.salesforce.com/id/{ORG_ID}/005Dx0000000000",
            "token_type": "Bearer",
            "issued_at": str(int(time.time() * 1000)),
            "signature": base64.b64encode(secrets.token_bytes(32)).decode(),
        }

    def oauth(self, body: bytes, authorization: str | None) -> tuple[int, dict[str, Any]]:
        """POST /services/oauth2/token → (status, JSON body)."""
        form = {k: v[0] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}
        grant = form.get("grant_type", "")
        creds = self.credentials
        if grant == "password":
            if (form.get("client_id"), form.get("client_secret")) != (
                creds.consumer_key,
                creds.consumer_secret,
            ):
                return 400, {"error": "invalid_client_id", "error_description": "client identifier invalid"}
            expected = creds.password + creds.security_token
            if form.get("username") != creds.username or form.get("password") != expected:
                return 400, {"error": "invalid_grant", "error_description": "authentication failure"}
            return 200, self.token_response()
        if grant == "client_credentials":
            expected = base64.b64encode(f"{creds.consumer_key}:{creds.consumer_secret}".encode()).decode()
            if authorization != f"Basic {expected}":
                return 400, {"error": "invalid_client", "error_description": "invalid client credentials"}
            return 200, self.token_response()
        if grant == "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return self._jwt(form.get("assertion", ""))
        return 400, {"error": "unsupported_grant_type", "error_description": "grant type not supported"}

    def _jwt(self, assertion: str) -> tuple[int, dict[str, Any]]:
        creds = self.credentials
        audiences = [
            "https://login.salesforce.com",
            "https://test.salesforce.com",
            f"https://{creds.my_domain}.salesforce.com",
        ]
        try:
            claims = jwt.decode(
                assertion,
                creds.public_key_pem,
                algorithms=["RS256"],
                audience=audiences,
                options={"require": ["iss", "sub", "aud", "exp"]},
            )
        except jwt.ExpiredSignatureError:
            return 400, {"error": "invalid_grant", "error_description": "expired authorization code"}
        except jwt.InvalidAudienceError:
            return 400, {"error": "invalid_grant", "error_description": "audience is invalid"}
        except jwt.PyJWTError:
            return 400, {"error": "invalid_grant", "error_description": "invalid assertion"}
        if claims["iss"] != creds.consumer_key:
            return 400, {"error": "invalid_client_id", "error_description": "client identifier invalid"}
        if claims["sub"] != creds.username:
            return 400, {"error": "invalid_grant", "error_description": "user hasn't approved this consumer"}
        # Salesforce refuses assertions valid for more than a few minutes.
        if int(claims["exp"]) > time.time() + 300:
            return 400, {"error": "invalid_grant", "error_description": "invalid assertion (exp too far)"}
        return 200, self.token_response()

    def soap_login(self, body: bytes) -> tuple[int, str]:
        text = body.decode()
        user = re.search(r"<n1:username>(.*?)</n1:username>", text, re.DOTALL)
        password = re.search(r"<n1:password>(.*?)</n1:password>", text, re.DOTALL)
        creds = self.credentials
        expected = creds.password + creds.security_token
        if (
            user is None
            or password is None
            or (unescape(user[1]), unescape(password[1]))
            != (
                creds.username,
                expected,
            )
        ):
            return 500, (
                '<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope '
                'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
                'xmlns:sf="urn:fault.partner.soap.sforce.com"><soapenv:Body><soapenv:Fault>'
                "<faultcode>INVALID_LOGIN</faultcode><faultstring>INVALID_LOGIN</faultstring><detail>"
                "<sf:LoginFault><sf:exceptionCode>INVALID_LOGIN</sf:exceptionCode><sf:exceptionMessage>"
                "Invalid username, password, security token; or user locked out.</sf:exceptionMessage>"
                "</sf:LoginFault></detail></soapenv:Fault></soapenv:Body></soapenv:Envelope>"
            )
        token = self.issue()
        return 200, (
            '<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope '
            'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
            'xmlns="urn:partner.soap.sforce.com"><soapenv:Body><loginResponse><result>'
            f"<serverUrl>{INSTANCE_URL}/services/Soap/u/59.0/{ORG_ID}</serverUrl>"
            f"<sessionId>{token}</sessionId><userId>005Dx0000000000</userId>"
            "</result></loginResponse></soapenv:Body></soapenv:Envelope>"
        )
