"""Writes bench/data/stream_sentences.json: the labelled set of bench/python/bench_stream.py.

Assistant-style answers, each a list of gold sentences (what a voice team would send to TTS one
at a time), joined by `sep` to make the text. Written by hand for keel's issue 11: plain
answers, then the hard cases (abbreviations, initialisms, decimals and versions, URLs and
e-mail, ellipses, quotes and brackets, Markdown lists and headings, emoji, CJK, other scripts).
Run it to regenerate the JSON after editing.
"""

from __future__ import annotations

import json
from pathlib import Path

S = " "
NL = "\n"

DOCS: list[tuple[str, list[str]]] = [
    (
        S,
        [
            "Sure, I can help with that.",
            "Your order shipped yesterday and should arrive on Friday.",
            "Is there anything else you need?",
        ],
    ),
    (S, ["Hello!", "How can I help you today?"]),
    (
        S,
        [
            "The museum opens at nine.",
            "Tickets cost twelve euros for adults and six for children.",
            "Students get a discount with a valid card.",
        ],
    ),
    (
        S,
        [
            "I checked your account.",
            "The last payment was received on March 3rd.",
            "Your next invoice is due in two weeks.",
        ],
    ),
    (S, ["Great question!", "The short answer is yes.", "The longer answer depends on your plan."]),
    (S, ["Dr. Smith will see you at 3 p.m. tomorrow.", "Please arrive ten minutes early."]),
    (S, ["Mr. and Mrs. Patel booked the room for two nights.", "Breakfast is included."]),
    (S, ["Prof. Nguyen teaches the course on Mondays.", "Office hours are on Thursdays."]),
    (
        S,
        [
            "You can use any soft fruit, e.g. bananas or mangoes.",
            "Blend it with yogurt and a little honey.",
        ],
    ),
    (
        S,
        [
            "Some cats, i.e. the long-haired breeds, need daily brushing.",
            "Short-haired cats need less care.",
        ],
    ),
    (
        S,
        [
            "It takes approx. twenty minutes to get there by bus.",
            "A taxi is faster but costs more.",
        ],
    ),
    (S, ["The match was Brazil vs. Argentina.", "Brazil won two to one."]),
    (S, ["See Fig. 3 for the wiring diagram.", "The red wire goes to terminal No. 5."]),
    (S, ["No.", "I'm afraid that option isn't available in your region."]),
    (S, ["Yes.", "No.", "Maybe later."]),
    (S, ["The package contains cables, adapters, etc.", "Everything is covered by the warranty."]),
    (
        S,
        [
            "Bring snacks, water, sunscreen, etc. to the hike.",
            "The trail is about eight kilometres long.",
        ],
    ),
    (S, ["The company was renamed Acme Inc. in 2019.", "It now has offices in four countries."]),
    (S, ["She moved to the U.S. in 2015.", "Before that she lived in Canada."]),
    (S, ["The U.S. Army Corps of Engineers built the dam.", "It was finished in 1936."]),
    (
        S,
        ["The store opens at 8 a.m. and closes at 6 p.m. on weekdays.", "On Sundays it is closed."],
    ),
    (S, ["We land at 7 p.m.", "Then we take the train to the city."]),
    (S, ["He earned a Ph.D. in chemistry from Oxford.", "His thesis was about catalysts."]),
    (S, ["J. R. R. Tolkien wrote The Hobbit.", "It was published in 1937."]),
    (S, ["The value of pi is about 3.14159.", "Most calculators show more digits."]),
    (
        S,
        [
            "Please upgrade to version 2.4.1 or later.",
            "Older versions have a known security issue.",
        ],
    ),
    (S, ["Install Python 3.12.", "Then run the setup script again."]),
    (S, ["The price rose by 4.5% last quarter.", "Analysts expect it to stabilise."]),
    (S, ["It weighs 1.2 kg and measures 30.5 cm.", "It fits in most backpacks."]),
    (
        S,
        [
            "You can find the form at https://example.com/forms/tax-2024.pdf.",
            "Fill it in and send it back by email.",
        ],
    ),
    (S, ["Visit www.example.org/help?lang=en for more details.", "The page is updated weekly."]),
    (S, ["Write to support@example.com.", "We usually reply within a day."]),
    (S, ["Well... I'm not entirely sure.", "Let me check the manual."]),
    (S, ["Wait... That's not what I expected.", "Let me try again."]),
    (S, ["Hmm… let me think about that for a moment.", "Okay, I have an idea."]),
    (S, ['He said, "I\'ll be there by noon."', "He arrived at two."]),
    (S, ['"Can you help me?" she asked.', "I said yes right away."]),
    (S, ['The sign read "Closed for repairs."', "We went to the other entrance."]),
    (S, ["The results were clear (see the table below).", "Option B was cheaper."]),
    (S, ["(This step is optional.)", "You can skip to the next section."]),
    (S, ["She whispered “Good night.”", "Then she turned off the light."]),
    (S, ["**Important:** back up your files first.", "Then start the update."]),
    (
        NL,
        [
            "Here are the steps:",
            "1. Open the Settings app.",
            "2. Tap Wi-Fi.",
            "3. Choose your network and enter the password.",
        ],
    ),
    (NL, ["You will need:", "- two eggs", "- a cup of flour", "- a pinch of salt"]),
    (NL, ["## Summary", "The plan saves money in the long run.", "It also reduces paperwork."]),
    (NL, ["Options:", "a. Pay monthly.", "b. Pay yearly and save ten percent."]),
    (S, ["Congratulations on your new job! 🎉", "I hope the first week goes well."]),
    (S, ["Thanks for your patience! 🙏", "Your refund is on its way."]),
    (S, ["That sounds delicious 😋", "Enjoy your dinner!"]),
    (S, ["Have a great trip! ✈️", "Don't forget your passport."]),
    (S, ["你好！", "今天天气很好。", "我们去公园散步吧。"]),
    (S, ["ありがとうございます。", "またお越しください。"]),
    (S, ["「明日は雨です。」", "傘を持って行ってください。"]),
    (S, ["Hola, ¿cómo estás?", "¡Qué bueno verte!"]),
    (S, ["Bonjour, je peux vous aider.", "Quelle est votre question ?"]),
    (S, ["Привет!", "Чем могу помочь?"]),
    (S, ["Der Zug fährt um 14.30 Uhr ab.", "Bitte seien Sie pünktlich."]),
    (S, ["The meeting moved to Jan. 15 at 10 a.m.", "I'll send a new invite."]),
    (S, ["The report is due on Dec. 1.", "Let me know if you need more time."]),
    (S, ["Our address is 221B Baker St. in London.", "The nearest station is Baker Street."]),
    (
        S,
        [
            "Martin Luther King Jr. gave the speech in 1963.",
            "It is one of the most famous speeches in history.",
        ],
    ),
    (S, ["The rate was about 2.5x higher than expected.", "We are looking into why."]),
    (S, ["Really?!", "I didn't know that."]),
    (S, ["Stop!", "Don't touch that wire."]),
    (S, ["Is it safe?", "Yes, as long as you wear gloves."]),
    (S, ["The answer is 42.", "It always has been."]),
    (
        S,
        [
            "I found three flights.",
            "The cheapest leaves at 6:15 a.m. and costs 89 dollars.",
            "The fastest takes under two hours.",
        ],
    ),
    (S, ["Your balance is $1,234.56.", "That includes the pending deposit."]),
    (S, ["The file is called report.final.v2.docx.", "Please open it in Word."]),
    (S, ["Call me at 555-0100.", "I'm available after five."]),
    (
        S,
        [
            "Let's go through this together.",
            "First, unplug the router.",
            "Second, wait thirty seconds.",
            "Finally, plug it back in.",
        ],
    ),
    (S, ["According to the WHO, exercise helps.", "Aim for thirty minutes a day."]),
    (S, ["The U.K. and France signed the treaty.", "It took effect the next year."]),
    (S, ["Note: this feature is in beta.", "Some things may change."]),
    (S, ["The temperature is −5 °C outside.", "Dress warmly."]),
    (S, ["Use the command `git pull` first.", "Then push your changes."]),
    (S, ["The recipe calls for 2 tbsp. of butter.", "You can use oil instead."]),
    (S, ["It's 5 o'clock somewhere.", "Time for a break."]),
    (S, ["I'd recommend the blue one.", "It's lighter, cheaper, and easier to clean."]),
    (S, ["Sorry, I didn't catch that.", "Could you repeat the question?"]),
    (S, ["The event starts at 7:30.", "Doors open at seven."]),
    (S, ["Sales grew in Q3.", "Q4 looks even better."]),
    (S, ["We ship to the EU, the U.S., and Canada.", "Other countries may take longer."]),
    (S, ["I'm not sure... but I think so.", "Let me double-check."]),
    (S, ["That's all for today.", "Goodbye!"]),
]


def main() -> None:
    out = [{"sep": sep, "sentences": sentences} for sep, sentences in DOCS]
    path = Path(__file__).with_name("stream_sentences.json")
    path.write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"{path}: {len(out)} texts, {sum(len(d['sentences']) for d in out)} sentences")


if __name__ == "__main__":
    main()
