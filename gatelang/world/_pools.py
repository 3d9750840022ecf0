"""Fixed pools the world draws from.

Names are fixed (docs and examples name some of them); the seed only decides which values each
subject gets. Every value is short ASCII so a document card can print it in the world's bitmap
font and a tiny model can memorise it; CJK names carry a romanised form for cards and e-mails.
"""

from __future__ import annotations

# (display name, romanised name used on cards, slugs and e-mail addresses)
NAMES: tuple[tuple[str, str], ...] = (
    ("Alice Okafor", "Alice Okafor"),
    ("Chen Moreau", "Chen Moreau"),
    ("Priya Raman", "Priya Raman"),
    ("Tomás Herrera", "Tomas Herrera"),
    ("王秀英", "Wang Xiuying"),
    ("Lukas Becker", "Lukas Becker"),
    ("Sofia Rossi", "Sofia Rossi"),
    ("Mateo García", "Mateo Garcia"),
    ("Amara Nwosu", "Amara Nwosu"),
    ("Ingrid Larsen", "Ingrid Larsen"),
    ("Kofi Mensah", "Kofi Mensah"),
    ("Elif Yılmaz", "Elif Yilmaz"),
    ("Nguyễn Văn An", "Nguyen Van An"),
    ("Olga Petrova", "Olga Petrova"),
    ("Jakub Nowak", "Jakub Nowak"),
    ("Fatima Haddad", "Fatima Haddad"),
    ("Liam O'Brien", "Liam OBrien"),
    ("Noor Khalil", "Noor Khalil"),
    ("Diego Fernández", "Diego Fernandez"),
    ("Zara Ahmed", "Zara Ahmed"),
    ("Malik Johnson", "Malik Johnson"),
    ("Hana Novák", "Hana Novak"),
    ("Emma Dubois", "Emma Dubois"),
    ("Ravi Sharma", "Ravi Sharma"),
    ("Sione Tupou", "Sione Tupou"),
    ("Camila Souza", "Camila Souza"),
    ("Anders Nilsson", "Anders Nilsson"),
    ("Eszter Kovács", "Eszter Kovacs"),
    ("Yannis Papadakis", "Yannis Papadakis"),
    ("Wanjiru Kamau", "Wanjiru Kamau"),
    ("Mariam Bakr", "Mariam Bakr"),
    ("Sebastián Ruiz", "Sebastian Ruiz"),
    ("Leila Farahani", "Leila Farahani"),
    ("Pieter de Vries", "Pieter de Vries"),
    ("Aino Virtanen", "Aino Virtanen"),
    ("Marco Bianchi", "Marco Bianchi"),
    ("Isabel Cruz", "Isabel Cruz"),
    ("Chidi Eze", "Chidi Eze"),
    ("李静怡", "Li Jingyi"),
    ("张伟明", "Zhang Weiming"),
    ("刘子涵", "Liu Zihan"),
    ("陈思远", "Chen Siyuan"),
    ("佐藤美咲", "Sato Misaki"),
    ("高橋健太", "Takahashi Kenta"),
    ("김민준", "Kim Minjun"),
    ("이서연", "Lee Seoyeon"),
    ("박지호", "Park Jiho"),
    ("Rosa Delgado", "Rosa Delgado"),
)

# Home cities: few, each with its own landmark, so scene images carry a learnable cue.
HOME_CITIES: tuple[str, ...] = ("Norhaven", "Castelmar", "Brightfell", "Lunport", "Pelago", "Karsvik")

STREETS: tuple[str, ...] = (
    "Elm", "Oak", "Birch", "Cedar", "Maple", "Pine", "Willow", "Ash",
    "Rose", "Lark", "Mill", "Bay", "Hill", "Park", "Lake", "River",
)

EMAIL_DOMAINS: tuple[str, ...] = ("mail.ex", "post.ex", "inbox.ex", "web.ex")

CONDITIONS: tuple[str, ...] = (
    "asthma", "migraine", "type 2 diabetes", "eczema", "gout", "psoriasis", "anemia",
    "epilepsy", "glaucoma", "lupus", "tinnitus", "scoliosis", "celiac disease", "vertigo",
    "bronchitis", "hypertension", "arthritis", "insomnia", "sinusitis", "shingles",
    "hepatitis B", "rosacea", "sciatica", "angina", "cataracts", "gallstones",
    "hay fever", "tendinitis", "thyroiditis", "pleurisy", "dermatitis", "colitis",
    "gastritis", "bursitis", "neuralgia", "otitis", "laryngitis", "tonsillitis",
    "kidney stones", "osteoporosis", "sleep apnea", "narcolepsy", "rickets", "scurvy",
    "measles", "mumps", "malaria", "dengue", "typhoid", "jaundice",
)

HOBBIES: tuple[str, ...] = (
    "chess", "pottery", "archery", "fencing", "sailing", "knitting", "origami", "rowing",
    "birdwatching", "juggling", "calligraphy", "beekeeping", "kayaking", "bouldering",
    "gardening", "painting", "surfing", "skating", "baking", "fishing", "hiking", "yoga",
    "tango", "karate", "judo", "cycling", "sketching", "woodwork", "quilting", "poetry",
    "stargazing", "rugby", "tennis", "squash", "golf", "diving", "skiing", "curling",
    "cricket", "polo", "badminton", "embroidery", "magic tricks", "kite flying",
    "mosaics", "glassblowing", "ballet", "harp", "violin", "drumming",
)

EMPLOYER_HEADS: tuple[str, ...] = (
    "Bluefin", "Copperleaf", "Northwind", "Silverline", "Redwood", "Greystone", "Sunpeak",
    "Ironbark", "Moonrise", "Clearwater", "Stormcrest", "Goldfield", "Blackpine", "Whitecap",
)
EMPLOYER_TAILS: tuple[str, ...] = ("Labs", "Bank", "Foods", "Media", "Motors", "Studio", "Logistics", "Health")

# Syllables for fictitious birth cities (disjoint from the home cities by construction).
CITY_HEADS: tuple[str, ...] = (
    "Ald", "Bel", "Cor", "Dun", "Ems", "Fal", "Gor", "Hal", "Ist", "Jor", "Kel", "Lor",
    "Mar", "Nev", "Ost", "Pra", "Ros", "Sal", "Tor", "Val",
)
CITY_TAILS: tuple[str, ...] = ("ford", "mere", "holm", "ton", "by", "wick", "stad", "burg")
