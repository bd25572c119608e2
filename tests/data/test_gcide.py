import os

import pytest

from bitcpm_ms.data.gcide import DEFAULT_GCIDE_PATH, clean_gcide_entry


def test_cleaner_on_typical_entries():
    raw = ('Calorie \\Cal"o*rie\\, n. [F., fr. L. calor heat.] (Physics)\n'
           '   The unit of heat; the amount raised from\n'
           '   0[deg] to 1[deg]. Compare the English standard unit, {Foot\n'
           '   pound}. See calorim[`e]tre and onwre[\'o]n.\n'
           '   [1913 Webster]\n\n'
           '         Satisfactory calorimetric results.       --Nichol.\n'
           '   [1913 Webster +PJC]\n')
    assert clean_gcide_entry(raw) == (
        "Calorie, n. [F., fr. L. calor heat.] (Physics) The unit of heat; the amount raised from "
        "0° to 1°. Compare the English standard unit, Foot pound. See calorimètre and onwreón.\n"
        "Satisfactory calorimetric results. --Nichol.")


def test_cleaner_respelling_greek_and_stray_headword():
    raw = ('Calorification \\Ca*lor`i*fi*ca"tion\\\n'
           '   (k[.a]*l[o^]r`[i^]*f[i^]*k[=a]"sh[u^]n), n. [Cf. F.\n'
           '   calorification.]\n   Production of heat. NGr. ????????? a monk; [ae]ther [alpha].\n'
           '   [Webster 1913 Suppl.] Calorimeter\n')
    assert clean_gcide_entry(raw) == ("Calorification, n. [Cf. F. calorification.] Production of heat. "
                                      "NGr. a monk; æther α.")


@pytest.mark.skipif(not os.path.isfile(DEFAULT_GCIDE_PATH), reason="dict-gcide not installed")
def test_cleaner_on_real_gcide_sample():
    from bitcpm_ms.data.readers import iter_documents
    n = 0
    for raw in iter_documents(DEFAULT_GCIDE_PATH):
        text = clean_gcide_entry(raw)
        assert text and "[1913 Webster]" not in text and "{" not in text and "}" not in text
        assert "\\" not in text.split("\n")[0]        # no pronunciation field in the headword line
        assert "  " not in text
        n += 1
        if n == 3000:
            break
