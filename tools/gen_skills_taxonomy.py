#!/usr/bin/env python3
"""Generate models/resume/data/skills.tsv from O*NET 29.2 Technology Skills.

Input:  $INFERMESH_DATA/skills-onet-29.2/Technology_Skills.txt (default INFERMESH_DATA=../shared/data,
        relative to the repository root). O*NET 29.2 is CC BY 4.0 (see models/resume/data/NOTICE.md).
Output: models/resume/data/skills.tsv with columns: canonical, category, aliases ("|"-separated).

What is kept: names flagged Hot Technology or In Demand for any occupation, or listed for >= 4 occupations.
What is modified (documented in NOTICE.md):
  * generic descriptions ("Web browser software", "Medical software") are dropped: they are product classes, not skills;
  * a trailing " software" is removed from product names ("SAP software" -> "SAP");
  * a trailing acronym after a lower-case description becomes the canonical name and the description an alias
    ("Structured query language SQL" -> "SQL" | "Structured query language");
    after a proper name the acronym becomes an alias ("Apache Subversion SVN" -> "Apache Subversion" | "SVN");
  * a vendor prefix becomes an alias without it ("Microsoft Excel" | "Excel"), and a few canonical names are
    shortened to the name people write ("Oracle Java" -> "Java");
  * hand-written aliases for common spellings (JS, NodeJS, k8s, Postgres, ...) and a few hand-written concept
    skills (machine learning, CI/CD, ...) that O*NET does not list as technologies are added.
Never uses the GPL pyresparser list.

Run from the repository root: python3 tools/gen_skills_taxonomy.py
"""

import csv
import os
import re
import sys
from collections import Counter, defaultdict

MIN_OCCUPATIONS = 4

VENDORS = [
    "Microsoft", "Adobe", "Oracle", "IBM", "Autodesk", "The MathWorks", "Apple", "Google", "ESRI", "Atlassian",
    "Amazon", "Apache", "Intuit", "Salesforce", "SAP", "Mozilla", "Cisco", "Dassault Systemes", "Bentley",
    "National Instruments", "Trimble", "Qlik Tech", "Tableau", "Corel", "Red Hat", "VMware", "Symantec", "Hyland",
    "Minitab", "Wolfram Research", "StataCorp", "Epic Systems", "Cerner", "Siemens", "SAS Institute",
]

# Single words left after removing a vendor that people do write alone for the product.
PRODUCT_WORDS = {
    "Excel", "Word", "Outlook", "Access", "Visio", "Photoshop", "Illustrator", "Acrobat", "Dreamweaver",
    "Captivate", "Audition", "Premiere", "Revit", "Maya", "Inventor", "Teams", "Project", "Publisher", "Azure",
    "Hyperion", "Taleo", "Eloqua", "Concur", "Solaris", "Webex", "Gmail", "Firefox", "Safari", "Chrome",
    "Tableau", "Informatica", "Redshift", "Kinesis", "Confluence", "Jira", "Bitbucket", "Bamboo", "Hive",
    "Maven", "Tomcat", "Solr", "Cassandra", "Airflow", "Kafka", "Hadoop", "Spark", "Flume", "Oozie", "Sqoop",
    "Struts", "Pig", "Avro", "Groovy", "Ant", "Keynote", "Minitab", "Mathematica", "Domino", "Informix",
    "Visualforce", "Dynamics", "SharePoint", "Sheets", "Slides", "Windows", "Stata",
}

# O*NET names too vague to match in text (every Google posting says "Google").
DROP = {"Google", "Google software", "Microsoft operating system", "Microsoft operating system software"}

# "X software" names where X is a product, not a class of software ("Tax software", "Graphics software").
SINGLE_PRODUCTS = {
    "SAP", "Salesforce", "Blackboard", "HubSpot", "Yardi", "Alteryx", "Workday", "MEDITECH", "Procore", "Ansible",
    "e-MDs", "Informatica", "InVision", "Perforce", "Rapid7", "S-Plus", "ESRI", "ERP", "Wonderware", "Bioconductor",
    "Compris",
}

# Canonical names to shorten to what people write (O*NET name kept as an alias).
RENAME = {
    "Oracle Java": "Java",
    "The MathWorks MATLAB": "MATLAB",
    "Atlassian JIRA": "Jira",
    "Atlassian Confluence": "Confluence",
    "Amazon Web Services AWS software": "AWS",
    "Amazon Web Services AWS": "AWS",
    "Microsoft Azure software": "Microsoft Azure",
    "Google Cloud software": "Google Cloud Platform",
    "Apache Hadoop": "Hadoop",
    "Apache Spark": "Spark",
    "Apache Kafka": "Kafka",
    "Microsoft Power BI": "Power BI",
    "Tableau software": "Tableau",
    "Ruby on Rails": "Ruby on Rails",
    "Microsoft .NET Framework": ".NET",
    "Microsoft Visual Basic": "Visual Basic",
    "Microsoft Visual Basic for Applications VBA": "VBA",
    "React": "React",
}

# Hand-written entries: canonical, category, aliases. Merged into an existing entry when the canonical name or
# an alias already exists (case-insensitive), otherwise added.
HAND = [
    ("JavaScript", "Programming languages", ["JS", "ECMAScript"]),
    ("TypeScript", "Programming languages", []),
    ("Node.js", "Web platform development software", ["NodeJS", "Node.JS"]),
    ("CI/CD", "Concepts (hand-written)", ["continuous integration", "continuous delivery", "continuous deployment"]),
    ("C++", "Programming languages", ["cpp"]),
    ("C#", "Programming languages", ["C sharp", "csharp"]),
    ("C", "Programming languages", []),
    (".NET", "Development environment software", ["dotnet", ".NET Framework", "Microsoft .NET Framework"]),
    ("Kubernetes", "Operating system software", ["k8s"]),
    ("Docker", "Operating system software", []),
    ("PostgreSQL", "Data base management system software", ["Postgres"]),
    ("AWS", "Platform as a service PaaS", ["Amazon Web Services", "Amazon Web Services AWS"]),
    ("Google Cloud Platform", "Platform as a service PaaS", ["GCP", "Google Cloud"]),
    ("Microsoft Azure", "Platform as a service PaaS", ["Azure"]),
    ("Go", "Programming languages", ["Golang"]),
    ("R", "Analytical or scientific software", []),
    ("Python", "Programming languages", []),
    ("Java", "Programming languages", ["Oracle Java"]),
    ("SQL", "Data base user interface and query software", ["Structured query language"]),
    ("NoSQL", "Data base management system software", []),
    ("HTML", "Web page creation and editing software", ["HTML5", "Hypertext markup language"]),
    ("CSS", "Web page creation and editing software", ["CSS3", "Cascading style sheets"]),
    ("React", "Web platform development software", ["React.js", "ReactJS"]),
    ("Angular", "Web platform development software", ["AngularJS"]),
    ("Vue.js", "Web platform development software", ["Vue", "VueJS"]),
    ("Git", "Configuration management software", []),
    ("GitHub", "Configuration management software", []),
    ("TensorFlow", "Analytical or scientific software", []),
    ("PyTorch", "Analytical or scientific software", []),
    ("scikit-learn", "Analytical or scientific software", ["sklearn"]),
    ("Spark", "Data base management system software", ["Apache Spark", "PySpark"]),
    ("Hadoop", "Data base management system software", ["Apache Hadoop"]),
    ("Kafka", "Data base management system software", ["Apache Kafka"]),
    ("Power BI", "Business intelligence and data analysis software", ["Microsoft Power BI"]),
    ("REST", "Concepts (hand-written)", ["RESTful", "REST API", "REST APIs"]),
    ("GraphQL", "Web platform development software", []),
    ("Terraform", "Configuration management software", []),
    ("Ansible", "Configuration management software", []),
    ("Jenkins", "Configuration management software", []),
    ("Linux", "Operating system software", []),
    ("UNIX", "Operating system software", ["Unix"]),
    ("Microsoft Excel", "Spreadsheet software", ["Excel", "MS Excel"]),
    ("Microsoft PowerPoint", "Presentation software", ["PowerPoint"]),
    ("Google Analytics", "Web platform development software", []),
    ("Google AdWords", "Web platform development software", ["AdWords", "Google Ads"]),
    ("BigQuery", "Data base management system software", ["Google BigQuery"]),
    ("Machine learning", "Concepts (hand-written)", ["ML"]),
    ("Deep learning", "Concepts (hand-written)", []),
    ("Natural language processing", "Concepts (hand-written)", ["NLP"]),
    ("Computer vision", "Concepts (hand-written)", []),
    ("Distributed systems", "Concepts (hand-written)", []),
    ("Data structures", "Concepts (hand-written)", []),
    ("Algorithms", "Concepts (hand-written)", []),
    ("Statistics", "Concepts (hand-written)", ["statistical analysis"]),
    ("Data analysis", "Concepts (hand-written)", ["data analytics"]),
    ("TCP/IP", "Network operating system software", []),
    ("Shell scripting", "Operating system software", ["Bash", "shell scripts"]),
    ("Perl", "Programming languages", []),
    ("Ruby", "Programming languages", []),
    ("PHP", "Programming languages", []),
    ("Scala", "Programming languages", []),
    ("Kotlin", "Programming languages", []),
    ("Swift", "Programming languages", []),
    ("Objective-C", "Programming languages", ["Objective C"]),
    ("Rust", "Programming languages", []),
    ("MATLAB", "Analytical or scientific software", ["The MathWorks MATLAB"]),
    ("Verilog", "Development environment software", []),
    ("VHDL", "Development environment software", []),
    ("Android", "Operating system software", []),
    ("iOS", "Operating system software", ["Apple iOS"]),
    ("Salesforce", "Customer relationship management CRM software", ["Salesforce CRM"]),
    ("SAP", "Enterprise resource planning ERP software", ["SAP software"]),
    ("Agile", "Concepts (hand-written)", ["Scrum"]),
]

# All capitals ("SQL") or a capitalised abbreviation such as "PaaS" (at least two capitals).
ACRONYM = re.compile(r"^\(?((?=(?:[^A-Z]*[A-Z]){2})[A-Z][A-Za-z0-9/&+.-]{1,7})\)?$")


def is_descriptive(words):
    """A lower-case description ("Structured query language"), not a product name."""
    return len(words) >= 2 and all(w[:1].islower() or not w[:1].isalpha() for w in words[1:])


def normalise(name, flagged):
    """Return (canonical, aliases) or None to drop the name."""
    if name in DROP:
        return None
    if name in RENAME:
        return RENAME[name], [name]
    aliases = []
    base = name
    if base.endswith(" software"):
        base = base[: -len(" software")]
        single = base.split()
        generic_single = len(single) == 1 and base not in SINGLE_PRODUCTS
        if is_descriptive(single) or generic_single or len(single) == 1 and base[:1].islower():
            # "Web browser software": a product class. A trailing acronym can still save it ("... SCADA").
            words = base.split()
            if not ACRONYM.match(words[-1]):
                return None
        aliases.append(name)
    words = base.split()
    if len(words) >= 2 and ACRONYM.match(words[-1]):
        acro = ACRONYM.match(words[-1]).group(1)
        rest = " ".join(words[:-1])
        if is_descriptive(words[:-1]) or len(words) == 2 and words[0][:1].islower():
            return acro, aliases + [rest, base]
        initials = {w[:1].upper() for w in words[:2]}
        if "-" not in acro and len(words) >= 3 and acro[:1] in initials:
            return rest, aliases + [acro, base]
    if len(words) >= 2 and is_descriptive(words) and words[0][:1].isupper() and not any(
        c.isupper() for w in words[1:] for c in w
    ):
        # Long lower-case descriptions without a product name ("Computer aided design") are too generic to match.
        if len(words) > 3:
            return None
    for v in VENDORS:
        if base.startswith(v + " ") and len(base) > len(v) + 3:
            stripped = base[len(v) + 1 :]
            # "Google Docs" -> "Docs" or "Oracle Database" -> "Database" would match plain words: a single
            # stripped word is kept only when it is a known product name or looks like one (inner capital, digit).
            single = " " not in stripped
            looks_like_product = any(c.isupper() or c.isdigit() for c in stripped[1:])
            if not single or looks_like_product or stripped in PRODUCT_WORDS:
                aliases.append(stripped)
            break
    return base, aliases


def main():
    data = os.environ.get("INFERMESH_DATA", "../shared/data")
    src = os.path.join(data, "skills-onet-29.2", "Technology_Skills.txt")
    out = os.path.join(os.path.dirname(__file__), "..", "models", "resume", "data", "skills.tsv")
    with open(src, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    count = Counter(r["Example"] for r in rows)
    flagged = {r["Example"] for r in rows if r["Hot Technology"] == "Y" or r["In Demand"] == "Y"}
    cats = defaultdict(Counter)
    for r in rows:
        cats[r["Example"]][r["Commodity Title"]] += 1
    names = sorted((n for n in count if n in flagged or count[n] >= MIN_OCCUPATIONS), key=lambda n: (-count[n], n))

    entries = {}  # canonical lower -> [canonical, category, aliases list]
    for n in names:
        norm = normalise(n, n in flagged)
        if norm is None:
            continue
        canon, aliases = norm
        key = canon.lower()
        cat = cats[n].most_common(1)[0][0]
        if key in entries:
            entries[key][2].extend(aliases)
        else:
            entries[key] = [canon, cat, list(aliases)]

    for canon, cat, aliases in HAND:
        keys = {canon.lower()} | {a.lower() for a in aliases}
        hit = next((k for k in keys if k in entries), None)
        if hit is None:
            for k, e in entries.items():
                if any(a.lower() in keys for a in e[2]):
                    hit = k
                    break
        if hit is not None:
            e = entries.pop(hit)
            merged = e[2] + ([e[0]] if e[0].lower() != canon.lower() else []) + aliases
            entries[canon.lower()] = [canon, e[1], merged]
        else:
            entries[canon.lower()] = [canon, cat, list(aliases)]

    # An alias belongs to one entry: the first (most frequent) that claims it; never another entry's canonical name.
    used = set(entries)
    lines = []
    for key in sorted(entries, key=lambda k: entries[k][0].lower()):
        canon, cat, aliases = entries[key]
        keep = []
        for a in aliases:
            al = a.strip().lower()
            if not al or al == key or al in used:
                continue
            used.add(al)
            keep.append(a.strip())
        lines.append(f"{canon}\t{cat}\t{'|'.join(keep)}")
    with open(out, "w", encoding="utf-8", newline="\n") as f:
        f.write("# canonical\tcategory\taliases (| separated). Generated by tools/gen_skills_taxonomy.py from O*NET 29.2"
                " (CC BY 4.0, see NOTICE.md)\n")
        f.write("\n".join(lines) + "\n")
    print(f"wrote {len(lines)} skills to {os.path.normpath(out)}", file=sys.stderr)


if __name__ == "__main__":
    main()
