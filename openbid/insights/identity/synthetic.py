"""A seeded synthetic CRM with a known truth (`cluster`): people with one to several records,
typos in names and postcodes, missing values, people who moved or changed email or phone,
and formatting noise that normalisation removes (case, spaces, gmail dots). Emails and
phones are hashed as the advertiser would (`hashing.hash_records`) before they are returned.
Also the logged identities of some of those people: a user id seen with a hashed email or
phone (a login on the advertiser's site).

Names come from syllables with a long-tailed frequency, as real names have (common names
make blocking and term-frequency adjustments matter).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from openbid.insights.identity.hashing import hash_records

_ONSETS = [
    "b",
    "br",
    "c",
    "ch",
    "d",
    "f",
    "g",
    "h",
    "j",
    "k",
    "l",
    "m",
    "n",
    "p",
    "r",
    "s",
    "sh",
    "st",
    "t",
    "th",
    "v",
    "w",
]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ea", "ie", "ou"]
_CODAS = ["", "", "n", "r", "l", "s", "th", "ck", "m", "nd", "rt"]
_CITIES = [
    "London",
    "Leeds",
    "Bristol",
    "Cardiff",
    "Glasgow",
    "Leicester",
    "Oxford",
    "York",
    "Bath",
    "Derby",
    "Hull",
    "Perth",
]
_AREAS = ["E", "LS", "BS", "CF", "G", "LE", "OX", "YO", "BA", "DE", "HU", "PH"]


def _names(rng: np.random.Generator, count: int, syllables: tuple[int, int]) -> list[str]:
    names = set()
    while len(names) < count:
        parts = [
            rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS)
            for _ in range(int(rng.integers(syllables[0], syllables[1] + 1)))
        ]
        names.add("".join(parts).capitalize())
    return sorted(names)


def _zipf_pick(rng: np.random.Generator, values: list[str], count: int) -> list[str]:
    weights = 1.0 / np.arange(1, len(values) + 1) ** 0.8
    return [values[i] for i in rng.choice(len(values), count, p=weights / weights.sum())]


def _typo(rng: np.random.Generator, text: str) -> str:
    if len(text) < 2:
        return text
    i = int(rng.integers(0, len(text) - 1))
    op = rng.integers(0, 4)
    letters = "abcdefghijklmnopqrstuvwxyz"
    if op == 0:  # swap two neighbours
        return text[:i] + text[i + 1] + text[i] + text[i + 2 :]
    if op == 1:  # drop one
        return text[:i] + text[i + 1 :]
    if op == 2:  # replace one
        return text[:i] + letters[int(rng.integers(0, 26))] + text[i + 1 :]
    return text[:i] + letters[int(rng.integers(0, 26))] + text[i:]  # insert one


def synthetic_crm(
    n_people: int = 1000,
    *,
    seed: int = 7,
    salt: bytes = b"synthetic-salt-0123456789",
    mean_records: float = 2.5,
    missing: float = 0.1,
    typo: float = 0.12,
    logged_share: float = 0.5,
) -> tuple[pa.Table, pa.Table]:
    """(CRM records, logged identities), both with the true person in `cluster`. The CRM's
    columns: record_id, first_name, surname, dob, postcode, city, email_hash, phone_hash;
    the identities': user_id, email_hash, phone_hash."""
    rng = np.random.default_rng(seed)
    firsts = _zipf_pick(rng, _names(rng, 400, (1, 2)), n_people)
    surnames = _zipf_pick(rng, _names(rng, 900, (2, 3)), n_people)
    birth = rng.integers(
        np.datetime64("1945-01-01").astype(int), np.datetime64("2005-12-31").astype(int), n_people
    )
    homes = rng.integers(0, len(_CITIES), n_people)

    def postcode(city: int) -> str:
        letters = "ABDEFGHJLNPQRSTUWXYZ"
        return (
            f"{_AREAS[city]}{int(rng.integers(1, 30))} {int(rng.integers(1, 10))}"
            f"{letters[int(rng.integers(0, 20))]}{letters[int(rng.integers(0, 20))]}"
        )

    def email(first: str, surname: str, k: int) -> str:
        domain = ["gmail.com", "outlook.com", "yahoo.co.uk", "mail.com"][int(rng.integers(0, 4))]
        return f"{first.lower()}.{surname.lower()}{k}@{domain}"

    def phone() -> str:
        return "07" + "".join(str(d) for d in rng.integers(0, 10, 9))

    records: dict[str, list] = {
        k: []
        for k in (
            "record_id",
            "first_name",
            "surname",
            "dob",
            "postcode",
            "city",
            "email",
            "phone",
            "cluster",
        )
    }
    identities: dict[str, list] = {"user_id": [], "email": [], "phone": [], "cluster": []}
    for person in range(n_people):
        first, surname = firsts[person], surnames[person]
        home = int(homes[person])
        code = postcode(home)
        mail, tel = email(first, surname, int(rng.integers(1, 99))), phone()
        dob = str(np.datetime64(int(birth[person]), "D"))
        copies = 1 + int(rng.poisson(mean_records - 1))
        for copy in range(copies):
            r_first, r_surname, r_code, r_city, r_mail, r_tel, r_dob = (
                first,
                surname,
                code,
                _CITIES[home],
                mail,
                tel,
                dob,
            )
            if copy and rng.random() < 0.1:  # moved house
                home2 = int(rng.integers(0, len(_CITIES)))
                r_code, r_city = postcode(home2), _CITIES[home2]
            if copy and rng.random() < 0.1:  # another email address
                r_mail = email(first, surname, int(rng.integers(100, 999)))
            if copy and rng.random() < 0.1:  # another phone
                r_tel = phone()
            if rng.random() < typo:
                r_first = _typo(rng, r_first)
            if rng.random() < typo:
                r_surname = _typo(rng, r_surname)
            if rng.random() < typo / 2:
                r_code = _typo(rng, r_code)
            if rng.random() < 0.03:  # day and month swapped
                y, m, d = r_dob.split("-")
                if int(d) <= 12:
                    r_dob = f"{y}-{d}-{m}"
            # formatting noise that normalisation removes
            if rng.random() < 0.3:
                r_mail = " " + r_mail.upper()
            if rng.random() < 0.3:
                r_tel = "+44 " + r_tel[1:4] + " " + r_tel[4:]
            if rng.random() < 0.3:
                r_code = r_code.replace(" ", "").lower()
            values = {
                "first_name": r_first,
                "surname": r_surname,
                "dob": r_dob,
                "postcode": r_code,
                "city": r_city,
                "email": r_mail,
                "phone": r_tel,
            }
            for key in values:
                rate = missing * (2.0 if key in ("email", "phone") else 1.0)
                if rng.random() < rate:
                    values[key] = None
            records["record_id"].append(f"r{len(records['record_id'])}")
            records["cluster"].append(person)
            for key, value in values.items():
                records[key].append(value)
        if rng.random() < logged_share:
            identities["user_id"].append(f"u{person * 7919 % 1_000_003}")
            identities["email"].append(mail if rng.random() < 0.8 else None)
            identities["phone"].append(tel if rng.random() < 0.5 else None)
            identities["cluster"].append(person)
    crm = hash_records(pa.table(records), salt=salt, default_country_code="44")
    logged = hash_records(pa.table(identities), salt=salt, default_country_code="44")
    # shuffled, so record order carries no truth
    order = rng.permutation(crm.num_rows)
    return crm.take(pa.array(order)), logged
