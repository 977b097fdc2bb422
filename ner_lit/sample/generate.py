"""Generate the sample corpus: synthetic news-like Korean sentences with KLUE's six entity types.

The offline tiny recipe and the tests need a corpus that ships with the code, and KLUE's
licence (CC BY-SA) and size argue against committing an excerpt of it. So the sentences
are built from our own templates and word lists. Entities carry their particles the way
real Korean does (``서울에서`` is ``B-LC I-LC O O``, and ``은/는``, ``이/가`` ... follow the
last syllable), so a model has to learn where a name ends, as on KLUE.

Generation is seeded and the files are committed; a test checks that a fresh run gives
the same bytes, so editing a template means regenerating with::

    python -m ner_lit.sample.generate --out ner_lit/sample --overwrite
"""
from __future__ import annotations

import argparse
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from ner_lit.corpus.klue import write_klue_tsv
from ner_lit.corpus.records import CorpusError, Entity, Sentence
from ner_lit.sample import SAMPLE_DIR

TRAIN_SENTENCES = 400
DEV_SENTENCES = 100
TRAIN_SEED = 20240401
DEV_SEED = 20240402

# ---------------------------------------------------------------------------- word lists

SURNAMES = "김 이 박 최 정 강 조 윤 장 임 한 오 서 신 권 황 안 송 류 홍".split()
GIVEN_NAMES = (
    "민준 서연 지훈 유진 하늘 도윤 수아 서준 예린 재현 지민 현우 소희 태양 은지 동현 나연 승민 가은 준호 "
    "혜진 성민 다은 우진 시우 채원 건우 하린 주원 윤아"
).split()
FOREIGN_NAMES = ["마이클 존슨", "에밀리 클라크", "다나카 유키", "왕웨이", "안드레아 로시", "소피 마르탱", "카를로스 멘데스"]
PLACES = [
    "서울", "부산", "대구", "인천", "광주", "대전", "울산", "세종", "수원", "춘천", "전주", "포항", "강릉",
    "여수", "경주", "서울 강남구", "부산 해운대구", "경기도", "강원도", "충청남도", "전라북도", "제주도",
    "뉴욕", "도쿄", "파리", "런던", "베를린", "베이징", "하노이", "시드니", "한강", "낙동강", "설악산",
    "지리산", "판교", "여의도", "광화문",
]
ORGANISATIONS = [
    "한국은행", "국회", "교육부", "보건복지부", "기상청", "통계청", "서울대학교", "연세대학교", "부산대학교",
    "대한축구협회", "국립중앙박물관", "세계보건기구", "유엔", "한빛전자", "미래에너지", "푸른바다식품",
    "새솔건설", "하나로통신", "별빛엔터테인먼트", "한국교통공사", "서울시립교향악단", "대한적십자사",
    "청솔고등학교", "국제올림픽위원회", "녹색시민연대", "한강일보",
]
COMPANIES = ["한빛전자", "미래에너지", "푸른바다식품", "새솔건설", "하나로통신", "별빛엔터테인먼트", "가온제약", "누리자동차"]
TEAMS = ["동해FC", "한빛 타이거즈", "서울 유나이티드", "푸른바다 돌핀스", "남산 이글스", "대한 국가대표팀"]
FIXED_DATES = ["지난해", "올해", "어제", "오늘", "지난달", "올해 상반기", "지난 주말", "연말", "새해 첫날", "지난 2월"]
FIXED_TIMES = ["정오", "자정", "이른 아침", "밤늦게"]
SUBJECTS = ["관계자들", "전문가들", "주민들", "학부모들", "상인들", "직원들", "소비자들", "연구진들"]
TOPICS = ["예산", "인사", "규제", "요금", "개발", "교육", "복지", "환경", "안전", "주거", "교통", "의료"]


def _person(r: random.Random) -> str:
    if r.random() < 0.12:
        return r.choice(FOREIGN_NAMES)
    return r.choice(SURNAMES) + r.choice(GIVEN_NAMES)


def _date(r: random.Random) -> str:
    y, m, d = r.randint(2015, 2024), r.randint(1, 12), r.randint(1, 28)
    return r.choice(
        [f"{y}년 {m}월 {d}일", f"{m}월 {d}일", f"지난 {d}일", f"{d}일", f"{y}년", r.choice(FIXED_DATES)]
    )


def _time(r: random.Random) -> str:
    mm = r.choice([10, 15, 20, 30, 40, 45, 50])
    return r.choice(
        [f"오전 {r.randint(6, 11)}시", f"오후 {r.randint(1, 6)}시", f"오후 {r.randint(1, 6)}시 {mm}분",
         f"새벽 {r.randint(1, 5)}시", f"밤 {r.randint(7, 11)}시", f"{r.randint(1, 12)}시 {mm}분", r.choice(FIXED_TIMES)]
    )


#: Quantity generators by kind, so a template asks for a quantity that fits its sentence.
QUANTITIES: dict[str, Callable[[random.Random], str]] = {
    "people": lambda r: r.choice([f"{r.randint(2, 90)}명", f"{r.randint(2, 9) * 10}여 명", f"약 {r.randint(2, 40)}명"]),
    "crowd": lambda r: r.choice([f"{r.randint(1, 9) * 100}여 명", f"약 {r.randint(2, 50)}만 명", f"{r.randint(2, 9)}천 명"]),
    "population": lambda r: f"{r.randint(5, 990)}만 {r.randint(1, 9)}천 명",
    "score": lambda r: r.choice([f"{r.randint(1, 5)}점", f"{r.randint(1, 4)}골"]),
    "rain": lambda r: f"{r.randint(10, 300)}mm",
    "distance": lambda r: f"{r.randint(3, 120)}km",
    "length": lambda r: f"{r.randint(4, 25)}m",
    "percent": lambda r: f"{r.randint(2, 60)}%",
    "money": lambda r: f"{r.randint(1, 90) * 100}억 원",
    "money_small": lambda r: f"{r.randint(1, 50) * 10}원",
    "copies": lambda r: f"{r.randint(2, 90)}만 부",
    "times": lambda r: r.choice([f"{r.randint(2, 9)}차례", f"{r.randint(2, 9)}번"]),
    "temp": lambda r: r.choice([f"섭씨 {r.randint(20, 38)}도", f"영하 {r.randint(2, 18)}도"]),
}

ENTITY_MAKERS: dict[str, Callable[[random.Random], str]] = {
    "PS": _person,
    "LC": lambda r: r.choice(PLACES),
    "OG": lambda r: r.choice(ORGANISATIONS),
    "OG.company": lambda r: r.choice(COMPANIES),
    "OG.team": lambda r: r.choice(TEAMS),
    "DT": _date,
    "TI": _time,
}
FILLERS = {"subject": SUBJECTS, "topic": TOPICS}

# ---------------------------------------------------------------------------- templates
#
# {TYPE} is an entity, {QT.kind} a quantity of that kind ({OG.team} an organisation of that kind), {TYPE|은} an entity followed by
# the particle pair 은/는 (이/가, 을/를, 과/와, 으로/로 likewise) chosen by its last
# syllable, and {w.subject} an untagged filler word.

TEMPLATES = [
    "{PS|은} {DT} {LC}에서 열린 {OG} 회의에 참석했다.",
    "{OG|은} {DT} {TI} {LC}에서 기자회견을 열고 새 정책을 발표했다.",
    "경찰에 따르면 {DT} {TI}쯤 {LC}의 한 주택에서 불이 나 주민 {QT.people|이} 대피했다.",
    "{PS|은} {LC} 출신으로 {DT} {OG}에 입단했다.",
    "{OG.company|은} {DT}까지 신입 사원 {QT.people|을} 채용할 계획이다.",
    "{PS} 감독이 이끄는 {OG.team|은} {LC}에서 열린 경기에서 {QT.score} 차로 이겼다.",
    "{DT} {LC} 일대에 {QT.rain}의 비가 내렸다.",
    "{PS|은} {TI} {LC}에 도착해 {PS|과} 면담했다.",
    "이번 행사에는 시민 {QT.people|이} 참가했다.",
    "{OG} 관계자는 \"{DT}부터 운영 시간을 {TI}까지 연장한다\"고 말했다.",
    "{LC}에서 {LC}까지 {QT.distance} 구간이 {DT} 개통된다.",
    "{PS|은} {OG}의 새 대표로 선임됐다.",
    "{DT} 기준 {LC}의 인구는 {QT.population|으로} 집계됐다.",
    "{OG|과} {OG|은} {DT} 업무협약을 맺었다.",
    "{PS} 선수는 {DT} 경기에서 {QT.score|을} 기록했다.",
    "시민들은 {LC} 광장에 모여 {OG}의 결정을 규탄했다.",
    "{PS|은} {DT} 자신의 누리집에 근황을 공개했다.",
    "{OG.company|은} {DT} 매출이 {QT.percent} 늘었다고 발표했다.",
    "{PS|과} {PS|은} {DT} {LC}에서 결혼식을 올린다.",
    "{LC} 시내 곳곳에서 축제가 열려 관광객 {QT.crowd|이} 몰렸다.",
    "{DT} {TI} {LC}행 열차가 출발했다.",
    "{OG}에 따르면 {DT} {LC}에서 신규 환자 {QT.people|이} 발생했다.",
    "{PS} 교수는 {OG} 연구팀과 함께 새로운 소재를 개발했다.",
    "{PS|은} {TI}부터 {TI}까지 {LC}에서 팬 사인회를 연다.",
    "{OG.company|은} {LC}에 {QT.money} 규모의 공장을 짓기로 했다.",
    "{DT}에 개봉한 이 영화는 관객 {QT.crowd|을} 모았다.",
    "{PS} 의원은 {OG} 국정감사에서 관련 의혹을 제기했다.",
    "{LC|은} {DT}부터 버스 요금을 {QT.money_small} 인상한다.",
    "{OG} 측은 {DT} {TI} 긴급 이사회를 소집했다.",
    "{PS|은} {OG|을} 떠나 {OG|으로} 이적했다.",
    "{LC} 앞바다에서 길이 {QT.length}의 고래가 발견됐다.",
    "{PS|은} \"{LC|은} 제2의 고향\"이라고 말했다.",
    "{DT} {LC}에서 열린 마라톤 대회에는 {QT.crowd|이} 참가했다.",
    "{PS} 작가의 신작은 {DT} 출간된 뒤 {QT.copies} 넘게 팔렸다.",
    "{OG|은} {DT} {TI}부터 {LC} 일부 구간의 통행을 막는다.",
    "{LC}의 한 식당을 운영하는 {PS} 씨가 이웃 {QT.people}에게 도시락을 전했다.",
    "{PS|은} 그동안 {QT.times} {LC|을} 방문했다.",
    "{TI} 현재 {LC}의 기온은 {QT.temp|으로} 관측됐다.",
    "{w.subject}은 이번 {w.topic} 결정에 대해 신중한 입장을 보였다.",
    "{w.subject}은 {w.topic} 문제에 대한 추가 조사가 필요하다고 지적했다.",
    "새로 바뀐 {w.topic} 제도를 두고 {w.subject} 사이에서 의견이 엇갈렸다.",
    "{w.subject}은 {w.topic} 분야의 변화를 차분히 지켜보겠다고 말했다.",
    "업계에서는 당분간 {w.topic} 관련 논의가 이어질 것으로 보고 있다.",
]

_SLOT_RE = re.compile(r"\{(PS|LC|OG|DT|TI|QT|w)(?:\.(\w+))?(?:\|(\w+))?\}")

# Particle pairs: (after a final consonant, after a vowel).
_PARTICLES = {"은": ("은", "는"), "이": ("이", "가"), "을": ("을", "를"), "과": ("과", "와"), "으로": ("으로", "로")}
# How the last digit or unit symbol is read, for words that do not end in Hangul:
# 0 is read 십/백/천/만 and always ends in a consonant; None = ends in a vowel.
_FINAL_READING = {"0": "ㅇ", "1": "ㄹ", "3": "ㅁ", "6": "ㄱ", "7": "ㄹ", "8": "ㄹ", "g": "ㅁ", "t": "ㄴ"}


def _final_consonant(word: str) -> str | None:
    """The final consonant of the word's last syllable as read aloud (``ㄹ`` matters for 으로/로)."""
    last = word[-1]
    if "가" <= last <= "힣":
        jong = (ord(last) - 0xAC00) % 28
        return None if jong == 0 else ("ㄹ" if jong == 8 else "other")
    return _FINAL_READING.get(last.lower())


def particle(word: str, key: str) -> str:
    """The form of particle ``key`` (written in its after-consonant form) that follows ``word``."""
    with_final, without_final = _PARTICLES[key]
    final = _final_consonant(word)
    if final is None or (key == "으로" and final == "ㄹ"):
        return without_final
    return with_final


@dataclass
class _Builder:
    """Collects the text and the entity spans of one sentence as its template is filled."""

    parts: list[str]
    entities: list[Entity]

    @property
    def length(self) -> int:
        return sum(len(p) for p in self.parts)


def fill(template: str, r: random.Random, sentence_id: str) -> Sentence:
    """One sentence from ``template``: entities drawn from the word lists, particles fitted."""
    b = _Builder([], [])
    pos = 0
    for m in _SLOT_RE.finditer(template):
        b.parts.append(template[pos : m.start()])
        kind, sub, key = m.group(1), m.group(2), m.group(3)
        if kind == "w":
            word = r.choice(FILLERS[sub])
        else:
            word = QUANTITIES[sub](r) if kind == "QT" else ENTITY_MAKERS[f"{kind}.{sub}" if sub else kind](r)
            b.entities.append(Entity(kind, b.length, b.length + len(word)))
        b.parts.append(word)
        if key:
            b.parts.append(particle(word, key))
        pos = m.end()
    b.parts.append(template[pos:])
    return Sentence.from_entities(sentence_id, "".join(b.parts), b.entities)


def generate_split(split: str, n: int, seed: int, taken: set[str]) -> list[Sentence]:
    """``n`` sentences with ids ``sample-<split>-00001`` ...; texts in ``taken`` are drawn again.

    ``taken`` is updated, so generating dev after train keeps the splits disjoint (a dev
    sentence seen in training would overstate the score).
    """
    r = random.Random(seed)
    out: list[Sentence] = []
    while len(out) < n:
        s = fill(r.choice(TEMPLATES), r, f"sample-{split}-{len(out) + 1:05d}")
        if s.text not in taken:
            taken.add(s.text)
            out.append(s)
    return out


def generate() -> dict[str, list[Sentence]]:
    """Both splits, train first, exactly as committed."""
    taken: set[str] = set()
    train = generate_split("train", TRAIN_SENTENCES, TRAIN_SEED, taken)
    dev = generate_split("dev", DEV_SENTENCES, DEV_SEED, taken)
    return {"train": train, "dev": dev}


def write_sample(out_dir: str | Path, overwrite: bool = False) -> dict[str, Path]:
    """Write ``train.tsv`` and ``dev.tsv`` in KLUE TSV form into ``out_dir``."""
    out = Path(out_dir)
    return {split: write_klue_tsv(sents, out / f"{split}.tsv", overwrite=overwrite) for split, sents in generate().items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=SAMPLE_DIR, help="directory for train.tsv and dev.tsv")
    parser.add_argument("--overwrite", action="store_true", help="replace existing files")
    args = parser.parse_args(argv)
    try:
        paths = write_sample(args.out, overwrite=args.overwrite)
    except CorpusError as exc:
        parser.exit(2, f"error: {exc}\n")
    for split, path in paths.items():
        print(f"{split}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
