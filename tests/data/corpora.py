"""Small corpora generated for the data tests (English-like, Chinese, malformed UTF-8)."""
import random

WORDS = ("the of and to in a is that for it as was with be by on not he this are or his from at "
         "which but have an they you were her she there been one all we their has would when if "
         "so no what up out more said into than its them can only other time new some could these "
         "two may first then do any like my now over such our man me even most made after also "
         "did many before must through back years where much your way well down should because "
         "each just those people how too little state good very make world still own see men work "
         "long get here between both life being under never day same another know while last might "
         "great old year off come since against go came right used take three heat water light").split()
HANZI = ("的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下"
         "过子说产种面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两"
         "体制机当使点从业本去把性好应开它合还因由其些然前外天政四日那社义事平形相全表间样与关各重新线内"
         "数正心反你明看原又么利比或但质气第向道命此变条只没结解问意建月公无系军很情者最立代想已通并提直")


def english_doc(rng: random.Random, n_words=None) -> str:
    n = n_words or rng.randint(8, 80)
    sents, cur = [], []
    for i in range(n):
        cur.append(rng.choice(WORDS))
        if len(cur) > 4 and rng.random() < 0.15:
            s = " ".join(cur)
            sents.append(s[0].upper() + s[1:] + rng.choice([".", ".", ",", ";", "!"]))
            cur = []
    if cur:
        s = " ".join(cur)
        sents.append(s[0].upper() + s[1:] + ".")
    if rng.random() < 0.3:
        sents.append(f"In {rng.randint(1000, 2024)} it cost {rng.randint(1, 999)}.{rng.randint(0, 99):02d} pounds.")
    return " ".join(sents)


def chinese_doc(rng: random.Random, n_chars=None) -> str:
    n = n_chars or rng.randint(10, 60)
    out = []
    for i in range(n):
        out.append(rng.choice(HANZI))
        if rng.random() < 0.08:
            out.append(rng.choice("，。、；！？"))
    return "".join(out) + "。"


def mixed_docs(n: int, seed: int = 0, chinese_every: int = 5):
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        if chinese_every and i % chinese_every == chinese_every - 1:
            docs.append(chinese_doc(rng))
        else:
            d = english_doc(rng)
            if rng.random() < 0.3:
                d += "\n" + english_doc(rng, 10)      # single newlines stay inside a document
            docs.append(d)
    return docs


ROUND_TRIP_SAMPLES = [
    "Hello world.",
    "  leading and trailing spaces  ",
    "tabs\tand\nnewlines\n\n\nand    runs   of spaces",
    "Digits 1234567890 and 3.14159, 1913 Webster.",
    "中文测试：你好，世界！这是一个往返测试。",
    "Mixed 中英 text with ümlauts, café, naïve — and “quotes”.",
    "emoji 🚀🎉 and rare 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 and U+FFFD \ufffd here",
    "literal special strings: <s> </s> <pad> <unk> should stay text",
    "\u3000ideographic space and zero\u200bwidth",
    "",
]
