"""The openai backend's knobs reach it from every stage that can use it (eval's judge and end-to-end steps)."""

from dataclasses import replace
from pathlib import Path

from maskdpo.evaluate import EndToEndSettings, ScoreSettings, annotate_settings, sample_settings, make_judge


def test_eval_judge_gets_the_server_profile_retries_and_timeout(tmp_path):
    settings = ScoreSettings(out=tmp_path, judge_backend="openai", judge_model="judge",
                             judge_base_url="http://127.0.0.1:9/v1", server_profile="openai", max_retries=1,
                             timeout=7.0)
    backend = make_judge(settings).backend
    assert backend.requested_profile == "openai" and backend.max_retries == 1
    assert backend.client.timeout.read == 7.0


def test_end_to_end_steps_pass_the_knobs_to_sampling_and_annotation(tmp_path):
    settings = EndToEndSettings(out=tmp_path, backend="openai", annotator_backend="openai", server_profile="extended",
                                max_retries=2, timeout=5.0)
    for stage in (sample_settings(settings, Path("q"), Path("o"), "m"),
                  annotate_settings(settings, Path("s"), Path("q"), Path("o"))):
        options = stage.backend_options()
        assert (options["server_profile"], options["max_retries"], options["timeout"]) == ("extended", 2, 5.0)


def test_trust_remote_code_is_one_switch_for_the_hf_and_lmdeploy_backends(tmp_path):
    from click.testing import CliRunner

    from maskdpo.annotate.run import AnnotateSettings
    from maskdpo.commands.annotate import annotate
    from maskdpo.sample import SampleSettings

    judge = AnnotateSettings()  # the default judge (InternLM2) ships its modeling code
    policy = SampleSettings()  # an arbitrary policy model: no remote code unless asked
    for backend in ("hf", "lmdeploy"):
        assert replace(judge, backend=backend).backend_options()["trust_remote_code"] is True
        assert replace(policy, backend=backend).backend_options()["trust_remote_code"] is False
    assert "trust_remote_code" not in replace(judge, backend="openai").backend_options()
    assert "--no-trust-remote-code" in CliRunner().invoke(annotate, ["--help"]).output
