//! A synthetic corpus: topics with their own words and embeddings around their own centre,
//! plus noise documents (random words, random embeddings).
#![allow(dead_code, clippy::unwrap_used)]

use infermesh_topics::Matrix;

pub const TOPIC_WORDS: [&[&str]; 4] = [
    &[
        "football", "goal", "league", "striker", "referee", "stadium", "coach", "match",
    ],
    &[
        "inflation",
        "bank",
        "interest",
        "rates",
        "market",
        "stocks",
        "bonds",
        "economy",
    ],
    &[
        "galaxy",
        "telescope",
        "planet",
        "orbit",
        "nasa",
        "comet",
        "stars",
        "rocket",
    ],
    &[
        "recipe", "oven", "flour", "butter", "sugar", "baking", "dough", "cake",
    ],
];
const COMMON: [&str; 6] = ["people", "today", "really", "think", "make", "good"];
pub const DIM: usize = 24;

/// A tiny deterministic generator (SplitMix64) for the fixtures.
pub struct Gen(u64);

impl Gen {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn uniform(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
    pub fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[(self.next() % from.len() as u64) as usize]
    }
}

pub struct Corpus {
    pub texts: Vec<String>,
    pub embeddings: Matrix,
    /// The true topic of each document, -1 for noise.
    pub truth: Vec<i64>,
}

fn centre(topic: usize) -> Vec<f32> {
    let mut g = Gen::new(1000 + topic as u64);
    (0..DIM).map(|_| g.uniform() * 2.0 - 1.0).collect()
}

/// `per_topic` documents for each topic (the topic index cycles) and `noise` noise documents
/// at the end; `seed` draws the words and the spread.
pub fn corpus(per_topic: usize, noise: usize, seed: u64) -> Corpus {
    let mut g = Gen::new(seed);
    let centres: Vec<Vec<f32>> = (0..TOPIC_WORDS.len()).map(centre).collect();
    let (mut texts, mut data, mut truth) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..per_topic * TOPIC_WORDS.len() {
        let t = i % TOPIC_WORDS.len();
        let mut words: Vec<&str> = (0..6).map(|_| g.pick(TOPIC_WORDS[t])).collect();
        words.extend((0..3).map(|_| g.pick(&COMMON)));
        words.push("the");
        texts.push(words.join(" "));
        data.extend(centres[t].iter().map(|c| c + (g.uniform() - 0.5) * 0.3));
        truth.push(t as i64);
    }
    let all: Vec<&str> = TOPIC_WORDS.iter().flat_map(|w| w.iter().copied()).collect();
    for _ in 0..noise {
        let words: Vec<&str> = (0..8).map(|_| g.pick(&all)).collect();
        texts.push(words.join(" "));
        data.extend((0..DIM).map(|_| g.uniform() * 2.0 - 1.0));
        truth.push(-1);
    }
    let n = texts.len();
    Corpus {
        texts,
        embeddings: Matrix::new(n, DIM, data).unwrap(),
        truth,
    }
}
