"""build_character_portrait_prompt: a character's fields as one bounded image prompt (pure unit tests)."""

from __future__ import annotations

from resolvers.portrait_prompt import MAX_PROMPT_LENGTH, STYLE, PortraitSubject, build_character_portrait_prompt


def test_the_subject_comes_first_then_look_personality_text_and_style_last() -> None:
    # given a character with every field short
    subject = PortraitSubject(
        name="Seraphine Vale",
        description="A wandering alchemist.",
        appearance_tags=["silver hair", "green eyes"],
        traits="curious, kind",
        persona="Speaks in riddles.",
        gender="female",
    )

    # when its prompt is built
    prompt = build_character_portrait_prompt(subject)

    # then the subject and gender lead, everything is in, in order, and the style closes it
    assert prompt.startswith("Portrait of Seraphine Vale, female. ")
    assert prompt.endswith(STYLE)
    pieces = [
        "Portrait of Seraphine Vale, female",
        "Appearance: silver hair, green eyes",
        "Personality: curious, kind",
        "A wandering alchemist",
        "Speaks in riddles",
        STYLE,
    ]
    positions = [prompt.index(piece) for piece in pieces]
    assert positions == sorted(positions)
    # and the free text is kept whole (no ellipsis), its trailing full stop not doubled
    assert "..." not in prompt and ".." not in prompt


def test_optional_fields_left_out_leave_no_empty_sections() -> None:
    # given a character with only a name and a description
    prompt = build_character_portrait_prompt(PortraitSubject(name="Bram", description="A blacksmith"))

    # then the prompt has no empty labels and no gender comma
    assert prompt == f"Portrait of Bram. A blacksmith. {STYLE}"


def test_whitespace_in_every_field_is_collapsed_to_single_spaces() -> None:
    # given fields full of newlines, tabs and runs of spaces
    subject = PortraitSubject(
        name="  Seraphine \n Vale ",
        description="A\twandering\n\nalchemist   with   silver hair",
        appearance_tags=["  silver \t hair ", "   ", "green\neyes"],
        traits="curious,\n  kind",
        persona="Speaks\r\nin riddles",
        gender=" female\n",
    )

    # when its prompt is built
    prompt = build_character_portrait_prompt(subject)

    # then no newline, tab or double space is left, and blank tags are dropped
    assert "\n" not in prompt and "\t" not in prompt and "\r" not in prompt and "  " not in prompt
    assert prompt.startswith("Portrait of Seraphine Vale, female. ")
    assert "Appearance: silver hair, green eyes. " in prompt
    assert "Personality: curious, kind. " in prompt
    assert "A wandering alchemist with silver hair. " in prompt
    assert "Speaks in riddles. " in prompt


def test_long_description_and_persona_are_cut_to_fit_the_bound() -> None:
    # given a description and a persona of 4000 characters each (the input maxima)
    description = " ".join(["description"] * 400)[:4000]
    persona = " ".join(["persona"] * 600)[:4000]
    subject = PortraitSubject(
        name="Seraphine Vale", description=description, appearance_tags=["silver hair"], traits="curious",
        persona=persona, gender="female",
    )

    # when its prompt is built
    prompt = build_character_portrait_prompt(subject)

    # then it fits, still leads with the subject and ends with the style, the description cut at a word
    assert len(prompt) <= MAX_PROMPT_LENGTH
    assert prompt.startswith("Portrait of Seraphine Vale, female. Appearance: silver hair. Personality: curious. ")
    assert prompt.endswith(STYLE)
    assert "description..." in prompt
    assert "descrip..." not in prompt.replace("description...", "")


def test_a_long_persona_after_a_short_description_is_cut_too() -> None:
    # given a short description and a 4000-character persona
    persona = " ".join(["riddles"] * 600)[:4000]
    subject = PortraitSubject(name="Bram", description="A blacksmith.", persona=persona)

    # when its prompt is built
    prompt = build_character_portrait_prompt(subject)

    # then the description is whole, the persona cut, and the whole within the bound
    assert len(prompt) <= MAX_PROMPT_LENGTH
    assert "Portrait of Bram. A blacksmith. riddles riddles" in prompt
    assert "riddles..." in prompt and prompt.endswith(STYLE)


def test_every_field_at_its_maximum_still_fits() -> None:
    # given every field at the largest size createCharacter accepts (name 100, gender 50, 30 tags of 50,
    # traits 1000, description and persona 4000), written without spaces so no word boundary helps
    subject = PortraitSubject(
        name="N" * 100,
        description="D" * 4000,
        appearance_tags=[f"{index:02d}" + "t" * 48 for index in range(30)],
        traits="T" * 1000,
        persona="P" * 4000,
        gender="G" * 50,
    )

    # when its prompt is built
    prompt = build_character_portrait_prompt(subject)

    # then it is within the bound and still leads with the subject and ends with the style
    assert len(prompt) <= MAX_PROMPT_LENGTH
    assert prompt.startswith("Portrait of " + "N" * 100 + ", " + "G" * 50 + ". ")
    assert prompt.endswith(STYLE)
    assert "T" * 1000 in prompt


def test_appearance_tags_are_capped() -> None:
    # given 30 appearance tags
    tags = [f"tag{index:02d}" for index in range(30)]

    # when the prompt is built
    prompt = build_character_portrait_prompt(
        PortraitSubject(name="Bram", description="A blacksmith", appearance_tags=tags)
    )

    # then only the first twelve are used, in order
    assert "Appearance: " + ", ".join(tags[:12]) + ". " in prompt
    assert "tag12" not in prompt and "tag29" not in prompt


def test_the_same_subject_always_gives_the_same_prompt() -> None:
    # given one subject, built twice from equal values
    def subject() -> PortraitSubject:
        return PortraitSubject(
            name="Seraphine", description="x " * 3000, appearance_tags=("a", "b"), traits="t", persona="p " * 3000,
            gender="female",
        )

    # when the prompt is built repeatedly
    prompts = {build_character_portrait_prompt(subject()) for _ in range(5)}

    # then it is identical every time
    assert len(prompts) == 1
