//! What the scripted provider's characters say: in-character lines written from the request's
//! facts alone. Every noun of the world comes from the facts — the stakeholder's name, role,
//! traits, goals and relationships (by name), the scene, the conflict and its phase, the
//! player's name and words — so a line is right for any scenario; the phrase banks hold only
//! verbs, glue and generic words. The tone follows the stakeholder's traits, the intent the
//! action reacted to and the standing, and lines written together are all different.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

/// How a character carries themselves, from their traits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    Fierce,
    Careful,
    Sly,
    Warm,
    Plain,
}

impl Tone {
    /// The tone of the first trait it knows (unknown traits are only quoted).
    pub fn of(traits: &[String]) -> Tone {
        for t in traits {
            let tone =
                match t.as_str() {
                    "bold" | "hot-headed" | "stubborn" | "proud" | "fierce" | "brash" | "angry"
                    | "ambitious" | "reckless" => Tone::Fierce,
                    "cautious" | "honest" | "timid" | "meticulous" | "pious" | "shy" | "wary"
                    | "nervous" | "careful" => Tone::Careful,
                    "cunning" | "greedy" | "secretive" | "clever" | "sly" | "ruthless"
                    | "scheming" => Tone::Sly,
                    "friendly" | "loyal" | "curious" | "kind" | "generous" | "cheerful"
                    | "warm" => Tone::Warm,
                    _ => continue,
                };
            return tone;
        }
        Tone::Plain
    }
}

/// A stakeholder as the facts describe them.
#[derive(Debug, Clone, Default)]
pub struct Who {
    pub id: String,
    pub name: String,
    pub role: String,
    pub traits: Vec<String>,
    pub goals: Vec<String>,
    /// (name, label, affinity) of each bond with another stakeholder.
    pub bonds: Vec<(String, String, f64)>,
    /// Toward the players, -100..=100.
    pub standing: i64,
}

fn strs(v: &Value, key: &str) -> Vec<String> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// The name of stakeholder `id` in the facts (its `stakeholders` or `present`).
pub fn name_of(facts: &Value, id: &str) -> Option<String> {
    ["/stakeholders", "/present"].iter().find_map(|p| {
        facts
            .pointer(p)
            .and_then(Value::as_array)?
            .iter()
            .find(|s| s.get("id").and_then(Value::as_str) == Some(id))?
            .get("name")
            .and_then(Value::as_str)
            .map(str::to_owned)
    })
}

impl Who {
    /// From a stakeholder object of the facts; relationships are named from the facts when
    /// the object does not name them.
    pub fn from_facts(v: &Value, facts: &Value) -> Who {
        let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default();
        let bonds = v
            .get("relationships")
            .and_then(Value::as_array)
            .map(|rels| {
                rels.iter()
                    .filter_map(|r| {
                        let with = r.get("with").and_then(Value::as_str)?;
                        if with == "player" {
                            return None;
                        }
                        let name = r
                            .get("name")
                            .and_then(Value::as_str)
                            .map(str::to_owned)
                            .or_else(|| name_of(facts, with))?;
                        let label = r
                            .get("label")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned();
                        let affinity = r.get("affinity").and_then(Value::as_f64).unwrap_or(0.0);
                        Some((name, label, affinity))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let standing = v
            .get("standing")
            .and_then(Value::as_i64)
            .or_else(|| facts.get("standing").and_then(Value::as_i64))
            .unwrap_or(0);
        Who {
            id: s("id").to_owned(),
            name: if s("name").is_empty() {
                s("id").to_owned()
            } else {
                s("name").to_owned()
            },
            role: s("role").to_owned(),
            traits: strs(v, "traits"),
            goals: strs(v, "goals"),
            bonds,
            standing,
        }
    }

    pub fn tone(&self) -> Tone {
        Tone::of(&self.traits)
    }

    /// The closest bond.
    pub fn ally(&self) -> Option<&(String, String, f64)> {
        self.bonds
            .iter()
            .filter(|b| b.2 > 0.0)
            .max_by(|a, b| a.2.total_cmp(&b.2))
    }

    /// The worst bond.
    pub fn rival(&self) -> Option<&(String, String, f64)> {
        self.bonds
            .iter()
            .filter(|b| b.2 < 0.0)
            .min_by(|a, b| a.2.total_cmp(&b.2))
    }
}

/// What a reaction reacts to: the kind of action, and, when known, who did it and their words.
#[derive(Debug, Clone, Default)]
pub struct Deed {
    pub kind: String,
    pub actor: Option<String>,
    pub said: Option<String>,
}

impl Deed {
    /// From a `recent_events` entry of the facts.
    pub fn from_event(e: &Value) -> Deed {
        let s = |k: &str| e.get(k).and_then(Value::as_str).map(str::to_owned);
        Deed {
            kind: s("action").unwrap_or_else(|| "say".into()),
            actor: s("actor"),
            said: s("said").filter(|t| !t.trim().is_empty()),
        }
    }
}

/// The place, the trouble and its phase, from the facts.
#[derive(Debug, Clone, Default)]
pub struct Setting {
    pub scene: Option<String>,
    pub conflict: Option<String>,
    pub phase: Option<String>,
    /// Names of the others present.
    pub others: Vec<String>,
}

impl Setting {
    pub fn from_facts(facts: &Value, who: &Who) -> Setting {
        let first_conflict = facts
            .pointer("/conflicts")
            .and_then(Value::as_array)
            .and_then(|a| {
                a.iter()
                    .find(|c| c.get("resolved") != Some(&Value::Bool(true)))
            });
        let conflict = facts
            .pointer("/conflict/name")
            .or_else(|| first_conflict.and_then(|c| c.get("name")))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let phase = facts
            .pointer("/phase/name")
            .or_else(|| first_conflict.and_then(|c| c.get("phase")))
            .and_then(|p| p.as_str().or_else(|| p.get("name").and_then(Value::as_str)))
            .map(str::to_owned);
        let others = facts
            .pointer("/present")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|p| {
                        p.get("name")
                            .and_then(Value::as_str)
                            .map(str::to_owned)
                            .or_else(|| p.as_str().and_then(|id| name_of(facts, id)))
                    })
                    .filter(|n| *n != who.name)
                    .collect()
            })
            .unwrap_or_default();
        Setting {
            scene: facts
                .pointer("/scene/name")
                .and_then(Value::as_str)
                .map(str::to_owned),
            conflict,
            phase,
            others,
        }
    }
}

/// A random index below `n`.
pub fn below(rng: &mut ChaCha8Rng, n: usize) -> usize {
    if n <= 1 { 0 } else { rng.random_range(0..n) }
}

pub fn pick<'a, T>(rng: &mut ChaCha8Rng, items: &'a [T]) -> &'a T {
    &items[below(rng, items.len())]
}

/// `items` in a random order (Fisher–Yates).
pub fn shuffle<T>(rng: &mut ChaCha8Rng, items: &mut [T]) {
    for i in (1..items.len()).rev() {
        let j = rng.random_range(0..=i);
        items.swap(i, j);
    }
}

/// Fills `{slot}`s from `vars`; `None` when a slot has no value (the template does not fit).
pub fn fill(template: &str, vars: &[(&str, Option<String>)]) -> Option<String> {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}')? + start;
        let key = &rest[start + 1..end];
        let value = vars.iter().find(|(k, _)| *k == key)?.1.as_ref()?;
        out.push_str(value);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Some(out)
}

/// The first words of what a player said (at most eight), as a quotable fragment.
pub fn fragment(said: &str) -> Option<String> {
    let words: Vec<&str> = said.split_whitespace().take(8).collect();
    let mut f = words.join(" ");
    while f.ends_with(|c: char| c.is_ascii_punctuation()) {
        f.pop();
    }
    let f = f.replace('"', "'");
    (f.chars().count() >= 3).then_some(f)
}

fn upper_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

/// A proper name as it reads mid-sentence: "The Brass Dome" → "the Brass Dome".
pub fn mid(name: &str) -> String {
    match name.strip_prefix("The ") {
        Some(rest) => format!("the {rest}"),
        None => name.to_owned(),
    }
}

/// Words that show a line answers an action of this kind; each opener below holds one.
pub fn kind_words(kind: &str) -> &'static [&'static str] {
    match kind {
        "threaten" => &["threat"],
        "help" => &["help"],
        "ask" => &["ask", "question"],
        "persuade" => &["persuade", "case", "convince"],
        "investigate" => &["poking", "looking", "digging", "search"],
        "trade" => &["trade", "deal", "price", "bargain"],
        "observe" => &["watch", "seen", "staring", "eyes"],
        _ => &["say", "said", "words"],
    }
}

/// Openers: the first beat of a reaction, answering the action. `{quote}` is the player's
/// words, `{player}` their name.
fn openers(kind: &str) -> &'static [&'static str] {
    match kind {
        "threaten" => &[
            "\"{quote}\" — is that a threat, {player}?",
            "You threaten me, in {scene}, with everyone watching?",
            "A threat. From you, {player}.",
            "Threats don't move me.",
            "I heard that threat, and so did everyone else.",
            "Threaten me again and see where it gets you.",
            "Big threats for someone so new to {scene}, {player}.",
            "So it's threats now. Noted.",
            "Careful, {player}. Threats have a way of coming back.",
            "Is that threat meant to frighten me?",
            "Threats, here? Brave, or foolish.",
            "Nobody has threatened me in a long while.",
            "Keep your threats to yourself.",
            "That sounded like a threat.",
        ],
        "help" => &[
            "You didn't have to help, {player}.",
            "That help came when it was needed.",
            "\"{quote}\" — and you meant it. Thank you for the help.",
            "Help, freely given? In {scene}? That's rare.",
            "I won't forget that you helped.",
            "Not many would help the way you did, {player}.",
            "You helped, and everyone in {scene} saw it.",
            "Help from a stranger. I didn't expect it.",
            "Why help me?",
            "That was decent help. I owe you.",
            "Help like that is remembered.",
            "You helped more than you know.",
        ],
        "ask" => &[
            "\"{quote}\"? You ask that here?",
            "You ask a lot of questions, {player}.",
            "That's a question with teeth.",
            "Ask me that again when {scene} is empty.",
            "Why ask me, of everyone in {scene}?",
            "Questions, always questions, {player}.",
            "You ask as if the answer were simple.",
            "What a question to ask.",
            "Ask someone else.",
            "You really want that question answered?",
            "That question again.",
            "Careful what you ask for.",
        ],
        "persuade" => &[
            "You make a fair case, {player}.",
            "\"{quote}\" — you think that will persuade me?",
            "You want to convince me. Many have tried.",
            "It's a good case. I'm not sure it's good enough.",
            "Persuade me, then. Go on.",
            "You argue your case well, {player}.",
            "\"{quote}\" — that's your case?",
            "A good case, I'll grant you.",
            "You're trying to persuade the wrong person.",
            "Convince me, if you can.",
            "That case has holes in it.",
            "Nice try, but you won't persuade me.",
        ],
        "investigate" => &[
            "Poking around {scene}, {player}?",
            "Found what you were looking for?",
            "You've been digging where you shouldn't.",
            "Searching for something? Everyone saw you.",
            "Still looking into {conflict}?",
            "Digging up old business, {player}?",
            "Looking for secrets in {scene}? Try elsewhere.",
            "Stop poking into what isn't yours.",
            "Looking for something?",
            "Digging won't help you.",
            "Keep searching; you won't find it.",
            "Whatever you're looking for, it isn't here.",
        ],
        "trade" => &[
            "A trade, then. What's your price?",
            "\"{quote}\" — and what do I get from the deal?",
            "Everything has a price, {player}.",
            "You bargain like someone with nothing to lose.",
            "A fair deal is hard to find in {scene}.",
            "Trade with me, {player}? Bold.",
            "Name the price and we'll see.",
            "What kind of deal is this?",
            "Trade? With you?",
            "That price is too high.",
            "Everyone wants a bargain these days.",
            "A deal, then. Let's hear it.",
        ],
        "observe" => &[
            "Seen enough, {player}?",
            "You've been watching me since you came to {scene}.",
            "Staring won't get you answers.",
            "I feel your eyes on me.",
            "Watch all you like.",
            "Watching, always watching, {player}.",
            "What have you seen in {scene} that I haven't?",
            "Enjoying the watching?",
            "Eyes front.",
            "Seen something you like?",
            "Watching won't change anything.",
            "You've seen enough.",
        ],
        _ => &[
            "\"{quote}\"... I heard what you said, {player}.",
            "Words are cheap in {scene}.",
            "So you've got something to say.",
            "Say it plainly, {player}.",
            "You said your piece; here is mine.",
            "\"{quote}\", you say.",
            "Fine words, {player}.",
            "I heard what you said.",
            "Words, words.",
            "Say that again?",
            "Those are big words.",
            "You say that now.",
        ],
    }
}

/// The body of a line, by intent.
fn bodies(intent: &str) -> &'static [&'static str] {
    match intent {
        "support" => &[
            "{ally} would tell you the same: I'm with you.",
            "I'll stand with you while {conflict} lasts.",
            "All I want is to {goal}. Maybe you can help me do it.",
            "Come find me when {phase} turns; I'll be ready.",
            "Call me {trait} if you like — I keep my word.",
            "There aren't many in {scene} I'd say this to: you have a friend.",
            "If {rival} gives you trouble, send them to me.",
            "You and I want the same thing, I think.",
            "Whatever {phase} brings, count me in.",
        ],
        "oppose" => &[
            "I mean to {goal}, and you're standing in the way.",
            "Go back to {rival} and tell them I said no.",
            "I've seen {conflict} chew up better than you.",
            "Try it, and see who in {scene} takes your side.",
            "I'm {trait}, not a fool. The answer is no.",
            "Not while {phase} holds. Not ever, maybe.",
            "You picked the wrong {role} to push.",
            "{ally} warned me about people like you.",
            "Walk away while you still can.",
        ],
        "deflect" => &[
            "Ask {ally}; I've nothing to add.",
            "I'm only the {role}. Leave me out of {conflict}.",
            "Not here. Not with {rival} so close.",
            "That's not mine to answer.",
            "Some other day, when {conflict} has cooled.",
            "I keep my head down in {scene}, and so should you.",
            "Talk to me when {rival} isn't watching.",
            "Why me? I only want to {goal}.",
            "You'll get nothing from me today.",
        ],
        "probe" => &[
            "Who sent you — {rival}?",
            "What is {conflict} to you, anyway?",
            "Tell me what you know first, then we'll talk.",
            "What does {ally} know that I don't?",
            "Why now, in the middle of {phase}?",
            "I'm {trait}; humour me. What are you after?",
            "Did {ally} put you up to this?",
            "And what do you stand to gain from {conflict}?",
            "Tell me why, and maybe I'll listen.",
        ],
        _ => &[
            "I'll remember this.",
            "We'll see what {phase} brings.",
            "Mind how you go in {scene}.",
            "I'm watching how this ends with {conflict}.",
            "{ally} will hear of it before nightfall.",
            "Everyone here is keeping count.",
            "Let's see how {rival} takes it.",
            "Noted. All of it.",
            "I'll be here when you've thought it over.",
        ],
    }
}

/// What a character does, by tone. `{other}` is someone else present.
fn gestures(tone: Tone) -> &'static [&'static str] {
    match tone {
        Tone::Fierce => &[
            "squares up to you",
            "jabs a finger toward you",
            "steps in close, jaw set",
            "raises their voice so all can hear",
            "glares at {other}, then at you",
        ],
        Tone::Careful => &[
            "takes half a step back",
            "glances at {other} before answering",
            "lowers their voice",
            "chooses each word slowly",
            "folds their hands and waits",
        ],
        Tone::Sly => &[
            "smiles without warmth",
            "leans in, all confidence",
            "weighs you with a sidelong look",
            "shares a knowing look with {other}",
            "laughs softly, as if at a private joke",
        ],
        Tone::Warm => &[
            "breaks into a grin",
            "rests a hand on your shoulder",
            "nods slowly",
            "makes room for you beside them",
            "waves {other} over to listen",
        ],
        Tone::Plain => &[
            "looks up",
            "shrugs",
            "folds their arms",
            "considers you for a long moment",
            "glances toward {other}",
        ],
    }
}

/// The intent a character of this tone and standing shows toward an action of this kind: one
/// of support, oppose, deflect, probe, observe.
pub fn intent(kind: &str, tone: Tone, standing: i64, rng: &mut ChaCha8Rng) -> &'static str {
    let friendly = standing >= 25;
    let hostile = standing <= -25;
    let by_tone = match (kind, tone) {
        ("help", Tone::Sly) => "probe",
        ("help", _) => "support",
        ("threaten", Tone::Fierce) => "oppose",
        ("threaten", Tone::Careful) => "deflect",
        ("threaten", Tone::Sly) => "probe",
        ("threaten", _) => "oppose",
        ("ask" | "investigate", Tone::Careful | Tone::Sly) => "deflect",
        ("ask" | "investigate", Tone::Warm) => "support",
        ("ask" | "investigate", _) => "probe",
        ("persuade", Tone::Fierce) => "oppose",
        ("persuade", Tone::Warm) => "support",
        ("persuade", _) => "probe",
        ("trade", Tone::Sly | Tone::Warm) => "support",
        ("trade", _) => "probe",
        ("observe", Tone::Fierce) => "oppose",
        ("observe", _) => "observe",
        (_, Tone::Warm) => "support",
        (_, Tone::Fierce) => "oppose",
        (_, Tone::Careful) => "deflect",
        (_, Tone::Sly) => "probe",
        (_, Tone::Plain) => "observe",
    };
    // Standing bends it: a devoted character rarely opposes, a hostile one rarely helps.
    match by_tone {
        "oppose" if friendly && rng.random_bool(0.6) => "deflect",
        "support" if hostile && rng.random_bool(0.6) => "probe",
        other => other,
    }
}

/// A reaction: behaviour, intent and line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reaction {
    pub behaviour: String,
    pub intent: String,
    pub line: String,
}

/// `count` reactions of `who` to `deed` in `setting`, pairwise different.
pub fn reactions(
    rng: &mut ChaCha8Rng,
    who: &Who,
    deed: &Deed,
    setting: &Setting,
    count: usize,
) -> Vec<Reaction> {
    let tone = who.tone();
    // Unknown for a prepared reaction (any player may act): openers that name them do not fit.
    let player = deed.actor.clone();
    let vars_for = |rng: &mut ChaCha8Rng| -> Vec<(&'static str, Option<String>)> {
        vec![
            ("player", player.clone()),
            ("quote", deed.said.as_deref().and_then(fragment)),
            ("scene", setting.scene.as_deref().map(mid)),
            ("conflict", setting.conflict.as_deref().map(mid)),
            ("phase", setting.phase.clone()),
            ("ally", who.ally().map(|b| b.0.clone())),
            ("rival", who.rival().map(|b| b.0.clone())),
            ("role", Some(who.role.clone()).filter(|r| !r.is_empty())),
            (
                "goal",
                (!who.goals.is_empty()).then(|| pick(rng, &who.goals).clone()),
            ),
            (
                "trait",
                (!who.traits.is_empty()).then(|| pick(rng, &who.traits).clone()),
            ),
            (
                "other",
                (!setting.others.is_empty()).then(|| pick(rng, &setting.others).clone()),
            ),
        ]
    };
    let mut out: Vec<Reaction> = Vec::with_capacity(count);
    // Every fitting (opener, body) pair once, in a random order: lines written together
    // never repeat one another.
    let mut tries = 0;
    while out.len() < count && tries < 4 {
        tries += 1;
        let intent = intent(&deed.kind, tone, who.standing, rng);
        let vars = vars_for(rng);
        let opens: Vec<String> = openers(&deed.kind)
            .iter()
            .filter_map(|t| fill(t, &vars))
            .collect();
        let mut personal: Vec<bool> = Vec::new();
        let mut bodies: Vec<String> = bodies(intent)
            .iter()
            .filter_map(|t| {
                let filled = fill(t, &vars)?;
                personal.push(
                    ["{ally}", "{rival}", "{goal}", "{trait}", "{role}"]
                        .iter()
                        .any(|p| t.contains(p)),
                );
                Some(filled)
            })
            .collect();
        // The trait shows when no body speaks of it: a trait-led line for every intent.
        if let Some(t) = who.traits.first() {
            bodies.push(match intent {
                "support" => format!("I'm {t}, and I stand by my friends."),
                "oppose" => format!("I'm {t}, and I don't bend."),
                "deflect" => format!("I'm {t}, not reckless."),
                "probe" => format!("I'm {t}; I'll want to know why."),
                _ => format!("I'm {t}; I'll be watching."),
            });
            personal.push(true);
        }
        let mut pairs: Vec<(usize, usize)> = (0..opens.len())
            .flat_map(|o| (0..bodies.len()).map(move |b| (o, b)))
            .collect();
        shuffle(rng, &mut pairs);
        // Prefer pairs whose opener and body are both unused so far.
        pairs.sort_by_key(|(o, b)| {
            out.iter()
                .filter(|r| r.line.starts_with(&opens[*o]) || r.line.ends_with(&bodies[*b]))
                .count()
        });
        // The first line written shows who speaks: a bond, a goal, a trait or the role.
        if out.is_empty()
            && let Some(i) = pairs.iter().position(|(_, b)| personal[*b])
        {
            let first = pairs.remove(i);
            pairs.insert(0, first);
        }
        let gestures: Vec<String> = gestures(tone)
            .iter()
            .filter_map(|g| fill(g, &vars))
            .collect();
        for (o, b) in pairs {
            if out.len() >= count {
                break;
            }
            let line = format!("{} {}", opens[o], upper_first(&bodies[b]));
            if out.iter().any(|r| r.line == line) {
                continue;
            }
            let gesture = &gestures[(o + b + out.len()) % gestures.len()];
            out.push(Reaction {
                behaviour: format!("{} {gesture}", who.name),
                intent: intent.to_owned(),
                line,
            });
        }
    }
    out
}

/// A dialogue reply of `who` to the player's words, aware of the conversation so far.
pub fn reply(
    rng: &mut ChaCha8Rng,
    who: &Who,
    setting: &Setting,
    player: Option<&str>,
    topic: &str,
    earlier: &[(bool, String)],
) -> String {
    let deed = Deed {
        kind: "say".into(),
        actor: player.map(str::to_owned),
        said: Some(topic.to_owned()),
    };
    let r = reactions(rng, who, &deed, setting, 1)
        .pop()
        .map(|r| r.line)
        .unwrap_or_else(|| format!("{}?", fragment(topic).unwrap_or_default()));
    // Carry the conversation on: what was said before is remembered.
    let callback = earlier
        .iter()
        .rev()
        .find(|(by_player, _)| *by_player)
        .and_then(|(_, t)| {
            fragment(t).map(|f| {
                let options = [
                    format!("Earlier you asked me \"{f}\" — I haven't forgotten."),
                    format!("First \"{f}\", now this."),
                    format!("You keep coming back to me, since \"{f}\"."),
                ];
                pick(rng, &options).clone()
            })
        });
    match callback {
        Some(c) => format!("{c} {r}"),
        None => r,
    }
}

/// The present stakeholder `id` of the facts' `present` (or `stakeholders`).
fn present(facts: &Value, id: &str) -> Option<Who> {
    ["/present", "/stakeholders"].iter().find_map(|p| {
        let v = facts
            .pointer(p)
            .and_then(Value::as_array)?
            .iter()
            .find(|s| s.get("id").and_then(Value::as_str) == Some(id))?;
        Some(Who::from_facts(v, facts))
    })
}

/// A scene's reactions prepared ahead (`prepare_scene_reactions`): for each `wanted`
/// `{stakeholder_id, action_kind, count}`, `count` different reactions of that stakeholder to
/// a player's action of that kind, naming no player (any may be the one who acts).
pub fn scene_reactions(rng: &mut ChaCha8Rng, facts: &Value) -> Value {
    let mut out = Vec::new();
    for w in facts
        .pointer("/wanted")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let (Some(id), Some(kind)) = (
            w.get("stakeholder_id").and_then(Value::as_str),
            w.get("action_kind").and_then(Value::as_str),
        ) else {
            continue;
        };
        let count = w.get("count").and_then(Value::as_u64).unwrap_or(1) as usize;
        let who = present(facts, id).unwrap_or_else(|| Who {
            id: id.to_owned(),
            name: name_of(facts, id).unwrap_or_else(|| id.to_owned()),
            ..Who::default()
        });
        let setting = Setting::from_facts(facts, &who);
        let deed = Deed {
            kind: kind.to_owned(),
            actor: None,
            said: None,
        };
        for r in reactions(rng, &who, &deed, &setting, count) {
            out.push(serde_json::json!({
                "stakeholder_id": id, "action_kind": kind,
                "behaviour": r.behaviour, "intent": r.intent, "line": r.line,
            }));
        }
    }
    serde_json::json!({ "reactions": out })
}

/// All beats of a phase in one answer (`generate_beat_description`): `count` different
/// descriptions, following the phase's authored beats, with the conflict's people in them.
pub fn phase_beats(rng: &mut ChaCha8Rng, facts: &Value) -> Value {
    let count = facts.get("count").and_then(Value::as_u64).unwrap_or(1) as usize;
    let conflict = facts
        .pointer("/conflict/name")
        .and_then(Value::as_str)
        .unwrap_or("The trouble");
    let phase = facts
        .pointer("/phase/name")
        .and_then(Value::as_str)
        .unwrap_or("this phase");
    let authored: Vec<String> = strs(facts.get("phase").unwrap_or(&Value::Null), "beats");
    let mut people: Vec<String> = facts
        .pointer("/conflict/stakeholders")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|id| id.as_str().and_then(|id| name_of(facts, id)))
        .collect();
    shuffle(rng, &mut people);
    let mut reacts = vec![
        "sees it and says nothing",
        "is the first to react",
        "turns away",
        "takes note",
        "pretends not to notice",
        "catches someone's eye and holds it",
        "mutters something under their breath",
    ];
    shuffle(rng, &mut reacts);
    let moods = [
        "tense", "weary", "restless", "brittle", "bitter", "uneasy", "grim",
    ];
    let mut beats: Vec<String> = Vec::with_capacity(count);
    for i in 0..count {
        let person = (!people.is_empty()).then(|| people[i % people.len()].clone());
        let mood = moods[(i + below(rng, moods.len())) % moods.len()];
        let base = match authored
            .get(i)
            .or_else(|| (!authored.is_empty()).then(|| &authored[i % authored.len()]))
        {
            Some(a) => a.clone(),
            None => format!("{phase} wears on, and {} feels {mood}.", mid(conflict)),
        };
        let text = match person {
            Some(p) => format!("{base} {p} {}.", reacts[i % reacts.len()]),
            None => format!("{base} Everything feels {mood}."),
        };
        let text = if beats.contains(&text) {
            format!("{text} It will not be the last time.")
        } else {
            text
        };
        beats.push(text);
    }
    serde_json::json!({ "beats": beats })
}
