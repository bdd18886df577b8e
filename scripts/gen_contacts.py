#!/usr/bin/env python3
"""Writes N realistic contacts (IT/PL/VI/EN names, one or two emails, a phone) as CSV,
for seeding a directory before a benchmark: gen_contacts.py N FILE.csv"""
import random
import sys

random.seed(7)
n = int(sys.argv[1])
first = {"IT": ["Niccolò", "Giulia", "Federica", "Marco", "Chiara"],
         "PL": ["Łukasz", "Zofia", "Małgorzata", "Paweł", "Jędrzej"],
         "VN": ["Nguyễn", "Trần", "Lê", "Phạm", "Hoàng"],
         "EN": ["Oliver", "Emily", "James", "Charlotte", "Harry"]}
last = {"IT": ["Fabbri", "Mancini", "Esposito", "Romano"],
        "PL": ["Żółkiewski", "Kowalska", "Wiśniewski", "Wójcik"],
        "VN": ["Thị Mai", "Văn Hùng", "Minh Anh", "Quốc Bảo"],
        "EN": ["Hughes", "Clarke", "Smith", "Taylor"]}
with open(sys.argv[2], "w", encoding="utf-8") as f:
    f.write("Nome,Cognome,E-mail,Telefono\n")
    for i in range(n):
        c = ["IT", "PL", "VN", "EN"][i % 4]
        d = f"{i:07d}"
        phone = {"IT": f"+39 34{d}{i % 10}", "PL": f"+48 6{d}{i % 10}",
                 "VN": f"+84 91{d}", "EN": f"+44 7911 {i // 4:06d}"}[c]
        # Real-looking domains: the normalizer refuses special-use ones (.test, .example).
        emails = f"person{i}@mail{c.lower()}.com"
        if i % 3 == 0:
            emails += f"; p{i}.{c.lower()}@work{i % 97}.com"
        f.write(f"{random.choice(first[c])},{random.choice(last[c])},{emails},{phone}\n")
