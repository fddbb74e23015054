"""The raw-format sources (KuaiRand, Taobao, Tmall, Criteo, Avazu) on small fixture files
written in their public column layouts; no Ray."""

from __future__ import annotations

import math
import uuid
from datetime import datetime, timezone
from pathlib import Path

import fsspec
import pyarrow as pa
import pytest

from diet_ray.data.errors import DataError
from diet_ray.data.prepare import PrepareOptions, prepare
from diet_ray.data.sources import SOURCES, build_source
from diet_ray.data.sources.avazu import RAW_FIELDS, Avazu
from diet_ray.data.sources.base import Source
from diet_ray.data.sources.criteo import CATEGORICAL, DENSE, Criteo
from diet_ray.data.sources.kuairand import USER_FIELDS, VIDEO_FIELDS, KuaiRand
from diet_ray.data.sources.taobao import Taobao
from diet_ray.data.sources.tmall import Tmall


def utc(*args: int) -> int:
    return int(datetime(*args, tzinfo=timezone.utc).timestamp())


def read_all(source: Source) -> pa.Table:
    return pa.concat_tables(list(source.chunks())).combine_chunks()


def check_canonical(source: Source, table: pa.Table) -> None:
    spec = source.spec
    assert sorted(table.column_names) == sorted(spec.columns())
    assert table.schema.field("timestamp").type == pa.int64()
    assert table.schema.field("label").type == pa.int8()
    for name in spec.categorical:
        assert table.schema.field(name).type == pa.string(), name
    for name in spec.multi_hot:
        assert table.schema.field(name).type == pa.list_(pa.string()), name
    for name in spec.dense:
        assert table.schema.field(name).type == pa.float64(), name
    assert set(table.column("label").to_pylist()) <= {0, 1}


def prepared_rows(source: Source, tmp_path: Path, stage_by: str) -> int:
    schema = prepare(source, str(tmp_path / "out"), PrepareOptions(stage_by=stage_by))
    assert [f.name for f in schema.sparse] == [*source.spec.categorical, *source.spec.multi_hot]
    assert [f.name for f in schema.dense] == list(source.spec.dense)
    return schema.total_rows


def write(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))
    return path


# -- KuaiRand ------------------------------------------------------------------------------

KR_LOG = ("user_id,video_id,date,hourmin,time_ms,is_click,is_like,is_follow,is_comment,"
          "is_forward,is_hate,long_view,play_time_ms,duration_ms,profile_stay_time,"
          "comment_stay_time,is_profile_enter,is_rand,tab")
KR_T0 = 1649383200000  # 2022-04-08 02:00 UTC in ms
KR_USERS = ("user_id,user_active_degree,is_lowactive_period,is_live_streamer,is_video_author,"
            "follow_user_num_range,fans_user_num_range,friend_user_num_range,"
            "register_days_range," + ",".join(f"onehot_feat{i}" for i in range(18)))
KR_VIDEOS = ("video_id,author_id,video_type,upload_dt,upload_type,visible_status,"
             "video_duration,server_width,server_height,music_id,music_type,tag")
KR_TAGS = {100: '"28,9"', 101: "", 102: "5", 103: '"1, 2,3"', 104: "7"}


def kr_row(i: int, rand: int, click: int | str | None = None) -> str:
    user, video = i % 6, 100 + i % 6  # user 5 and video 105 are in no side table
    click = (i % 3 == 0) * 1 if click is None else click
    t = KR_T0 + i * 3_600_500
    return (f"{user},{video},20220408,{200 + i},{t},{click},0,0,0,0,0,{i % 2},1000,"
            f"{5000 + i},0,0,0,{rand},{i % 4}")


def kuairand_folder(root: Path, sides: bool = True, **bad: str) -> Path:
    std = [kr_row(i, 0) for i in range(20)]
    rnd = [kr_row(i, 1) for i in range(20, 30)]
    if "click" in bad:
        std[7] = kr_row(7, 0, click=bad["click"])
    header = KR_LOG.replace(",tab", "") if "drop_tab" in bad else KR_LOG
    if "drop_tab" in bad:
        std = [r.rsplit(",", 1)[0] for r in std]
    data = root / "data"
    # the random log's name sorts first: the source must still read standard logs first
    write(data / "log_random_4_22_to_5_08_pure.csv", [KR_LOG, *rnd])
    write(data / "log_standard_4_08_to_4_21_pure.csv", [header, *std])
    if sides:
        users = [f"{u},{['high_active', 'middle_active', 'low_active'][u % 3]},0,0,0,"
                 f"0-10,{u}0-100,0,61-90," + ",".join(str(u * 10 + k) for k in range(18))
                 for u in range(5)]
        write(data / "user_features_pure.csv", [KR_USERS, *users])
        videos = [f"{v},{v + 1000},{'AD' if v == 101 else 'NORMAL'},20220401,ShootUpload,"
                  f"public,{v * 10}.5,720,1280,{v + 2000},{v % 2},{KR_TAGS[v]}"
                  for v in range(100, 105)]
        write(data / "video_features_basic_pure.csv", [KR_VIDEOS, *videos])
        write(data / "video_features_statistic_pure.csv", ["video_id,date,show_cnt", "100,1,2"])
    return root


def test_kuairand_rows_labels_timestamps_and_joins(tmp_path):
    source = KuaiRand(str(kuairand_folder(tmp_path)))
    t = read_all(source)
    check_canonical(source, t)
    assert t.num_rows == 30
    assert set(USER_FIELDS) | set(VIDEO_FIELDS) <= set(source.spec.categorical)
    assert source.spec.multi_hot == ("tag",)
    assert source.spec.dense == ("duration_ms", "video_duration")
    rows = t.to_pylist()
    # standard log first, then random
    assert [r["timestamp"] for r in rows] == [(KR_T0 + i * 3_600_500) // 1000 for i in range(30)]
    assert rows[0]["timestamp"] == utc(2022, 4, 8, 2)
    assert rows[1]["timestamp"] == utc(2022, 4, 8, 3) + 0  # 3_600_500 ms floors to 3600 s
    assert [rows[i]["label"] for i in (0, 1, 2, 3, 21)] == [1, 0, 0, 1, 1]
    assert rows[2]["user_id"] == "2" and rows[2]["video_id"] == "102" and rows[2]["tab"] == "2"
    assert rows[2]["duration_ms"] == 5002.0
    # user features joined by user_id; user 5 has no row: missing
    assert rows[2]["user_active_degree"] == "low_active"
    assert rows[2]["fans_user_num_range"] == "20-100"
    assert rows[2]["onehot_feat3"] == "23"
    assert rows[5]["user_active_degree"] is None and rows[5]["onehot_feat0"] is None
    # video features and tags joined by video_id; video 105 has none
    assert rows[0]["author_id"] == "1100" and rows[0]["tag"] == ["28", "9"]
    assert rows[1]["video_type"] == "AD" and rows[1]["tag"] == []
    assert rows[3]["tag"] == ["1", "2", "3"]
    assert rows[4]["video_duration"] == 1040.5 and rows[4]["music_type"] == "0"
    assert rows[5]["tag"] == [] and rows[5]["author_id"] is None
    assert rows[5]["video_duration"] is None


def test_kuairand_options_without_side_tables(tmp_path):
    folder = kuairand_folder(tmp_path, sides=False)
    source = KuaiRand(str(folder), label="long_view", logs=["standard"])
    t = read_all(source)
    check_canonical(source, t)
    assert source.spec.categorical == ("user_id", "video_id", "tab")
    assert source.spec.multi_hot == () and source.spec.dense == ("duration_ms",)
    assert t.num_rows == 20
    assert t.column("label").to_pylist()[:4] == [0, 1, 0, 1]
    # one log file given directly; its folder's side tables are still found
    one = kuairand_folder(tmp_path / "with_sides") / "data" / "log_random_4_22_to_5_08_pure.csv"
    source = KuaiRand(str(one))
    assert read_all(source).num_rows == 10 and "tag" in source.spec.multi_hot


def test_kuairand_bad_inputs(tmp_path):
    with pytest.raises(DataError, match=r"log_standard_4_08_to_4_21_pure\.csv.*'tab'"):
        read_all(KuaiRand(str(kuairand_folder(tmp_path / "a", drop_tab="1"))))
    with pytest.raises(DataError, match=r"log_standard_4_08_to_4_21_pure\.csv.*row 7"):
        read_all(KuaiRand(str(kuairand_folder(tmp_path / "b", click="2"))))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no KuaiRand"):
        KuaiRand(str(tmp_path / "empty"))
    with pytest.raises(DataError, match="logs"):
        KuaiRand(str(kuairand_folder(tmp_path / "c")), logs=["both"])
    folder = kuairand_folder(tmp_path / "d")
    write(folder / "data" / "user_features_pure.csv", ["user_id,user_active_degree", "1,high"])
    with pytest.raises(DataError, match=r"user_features_pure\.csv.*follow_user_num_range"):
        KuaiRand(str(folder))


def test_kuairand_prepare(tmp_path):
    source = KuaiRand(str(kuairand_folder(tmp_path / "in")))
    assert prepared_rows(source, tmp_path, "rows:10") == 30


# -- Taobao --------------------------------------------------------------------------------

TB_T0 = utc(2017, 11, 25, 1)
TB_BEHAVIORS = ("pv", "buy", "cart", "fav", "pv")


def taobao_lines(n: int = 40) -> list[str]:
    return [f"{i % 7},{1000 + i % 11},{50 + i % 3},{TB_BEHAVIORS[i % 5]},{TB_T0 + i * 9000}"
            for i in range(n)]


def test_taobao_memory_fs_labels_and_timestamps():
    fs = fsspec.filesystem("memory")
    root = f"/taobao-{uuid.uuid4().hex}"
    lines = taobao_lines()
    fs.pipe(f"{root}/part-1.csv", "\n".join(lines[:25]).encode() + b"\n")
    fs.pipe(f"{root}/part-2.csv", "\n".join(lines[25:]).encode() + b"\n")
    fs.pipe(f"{root}/README.md", b"not data")
    source = Taobao(f"memory://{root}")
    t = read_all(source)
    check_canonical(source, t)
    assert t.num_rows == 40
    rows = t.to_pylist()
    assert [r["label"] for r in rows[:5]] == [0, 1, 1, 1, 0]
    assert rows[12] == {"timestamp": TB_T0 + 12 * 9000, "label": 1, "user": "5",
                        "item": "1001", "category": "50"}
    only_buy = read_all(Taobao(f"memory://{root}", positive=["buy"]))
    assert only_buy.column("label").to_pylist()[:5] == [0, 1, 0, 0, 0]
    fs.rm(root, recursive=True)


def test_taobao_time_range_and_bad_inputs(tmp_path):
    path = write(tmp_path / "UserBehavior.csv", taobao_lines())
    kept = read_all(Taobao(str(path), time_range=[TB_T0, TB_T0 + 10 * 9000]))
    assert kept.num_rows == 10
    bad = taobao_lines()
    bad[17] = "1,2,3,click,1511572000"
    write(tmp_path / "bad" / "UserBehavior.csv", bad)
    with pytest.raises(DataError, match=r"UserBehavior\.csv: row 17 .*'click'"):
        read_all(Taobao(str(tmp_path / "bad")))
    write(tmp_path / "short" / "UserBehavior.csv", ["1,2,3,pv"])  # a column missing
    with pytest.raises(DataError, match=r"UserBehavior\.csv"):
        read_all(Taobao(str(tmp_path / "short")))
    with pytest.raises(DataError, match="positive"):
        Taobao(str(path), positive=["like"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no Taobao"):
        Taobao(str(tmp_path / "empty"))


def test_taobao_prepare(tmp_path):
    source = Taobao(str(write(tmp_path / "in" / "UserBehavior.csv", taobao_lines())))
    assert prepared_rows(source, tmp_path, "day") == 40


# -- Tmall ---------------------------------------------------------------------------------

TM_HEADER = "user_id,item_id,cat_id,seller_id,brand_id,time_stamp,action_type"
TM_DAYS = ("511", "0829", "1111", "1110", "601")


def tmall_folder(root: Path, users: bool = True, bad_row: tuple[int, str] | None = None) -> Path:
    rows = [f"{1 + i % 4},{300 + i},{20 + i % 5},{i % 3},{'' if i % 6 == 0 else 700 + i},"
            f"{TM_DAYS[i % 5]},{i % 4}" for i in range(30)]
    if bad_row:
        rows[bad_row[0]] = bad_row[1]
    write(root / "user_log_format1.csv", [TM_HEADER, *rows])
    write(root / "train_format1.csv", ["user_id,merchant_id,label", "1,2,0"])
    if users:  # user 4 is missing
        write(root / "user_info_format1.csv",
              ["user_id,age_range,gender", "1,6,0", "2,,1", "3,0,2"])
    return root


def test_tmall_rows_labels_timestamps_and_user_join(tmp_path):
    source = Tmall(str(tmall_folder(tmp_path)))
    t = read_all(source)
    check_canonical(source, t)
    assert source.spec.categorical[-2:] == ("age_range", "gender")
    assert t.num_rows == 30
    rows = t.to_pylist()
    assert [r["timestamp"] for r in rows[:5]] == [
        utc(2014, 5, 11), utc(2014, 8, 29), utc(2014, 11, 11), utc(2014, 11, 10), utc(2014, 6, 1)]
    assert rows[2]["timestamp"] == 1415664000
    assert [r["label"] for r in rows[:4]] == [0, 1, 1, 1]  # click, cart, purchase, favourite
    assert rows[0]["brand_id"] is None and rows[1]["brand_id"] == "701"
    assert rows[1]["user_id"] == "2" and rows[1]["item_id"] == "301"
    assert (rows[0]["age_range"], rows[0]["gender"]) == ("6", "0")
    assert (rows[1]["age_range"], rows[1]["gender"]) == (None, "1")
    assert (rows[3]["age_range"], rows[3]["gender"]) == (None, None)  # user 4: no user row
    purchases = read_all(Tmall(str(tmp_path), positive=[2], year=2015)).to_pylist()
    assert [r["label"] for r in purchases[:4]] == [0, 0, 1, 0]
    assert purchases[2]["timestamp"] == utc(2015, 11, 11)


def test_tmall_without_user_info_and_bad_inputs(tmp_path):
    source = Tmall(str(tmall_folder(tmp_path / "a", users=False) / "user_log_format1.csv"))
    assert "gender" not in source.spec.categorical
    check_canonical(source, read_all(source))
    with pytest.raises(DataError, match=r"user_log_format1\.csv: row 9 .*mmdd.*'1340'"):
        read_all(Tmall(str(tmall_folder(tmp_path / "b", bad_row=(9, "1,2,3,4,5,1340,0")))))
    with pytest.raises(DataError, match=r"user_log_format1\.csv: row 3 .*'0230'"):
        read_all(Tmall(str(tmall_folder(tmp_path / "c", bad_row=(3, "1,2,3,4,5,0230,0")))))
    with pytest.raises(DataError, match=r"user_log_format1\.csv: row 4 .*action_type.*'4'"):
        read_all(Tmall(str(tmall_folder(tmp_path / "d", bad_row=(4, "1,2,3,4,5,1111,4")))))
    write(tmp_path / "e" / "user_log_format1.csv",
          ["user_id,item_id,cat_id,merchant_id,brand_id,time_stamp,action_type", "1,2,3,4,5,511,0"])
    with pytest.raises(DataError, match=r"user_log_format1\.csv: missing column.*seller_id"):
        read_all(Tmall(str(tmp_path / "e")))
    with pytest.raises(DataError, match="positive"):
        Tmall(str(tmp_path / "a"), positive=["buy"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no user_log_format1"):
        Tmall(str(tmp_path / "empty"))


def test_tmall_prepare(tmp_path):
    source = Tmall(str(tmall_folder(tmp_path / "in")))
    schema_rows = prepared_rows(source, tmp_path, "day")
    assert schema_rows == 30


# -- Criteo --------------------------------------------------------------------------------


def criteo_line(i: int, label: str | None = None) -> str:
    dense = ["" if (i + k) % 5 == 0 else str((i * k) % 50 - 2) for k in range(13)]
    cats = ["" if (i + k) % 7 == 0 else f"{(i * 31 + k) % 9:08x}" for k in range(26)]
    return "\t".join([label if label is not None else str(i % 2), *dense, *cats])


def criteo_folder(root: Path, bad_label: str | None = None) -> Path:
    day2 = [criteo_line(i) for i in range(12)]
    if bad_label is not None:
        day2[5] = criteo_line(5, bad_label)
    write(root / "day_2", day2)
    write(root / "day_10", [criteo_line(i) for i in range(12, 20)])
    write(root / "test.txt", ["\t".join(criteo_line(0).split("\t")[1:])])  # no label column
    write(root / "readme.txt", ["Criteo"])
    return root


def test_criteo_rows_labels_positions_and_dense(tmp_path):
    source = Criteo(str(criteo_folder(tmp_path)))
    assert [p.rsplit("/", 1)[-1] for p in source.paths] == ["day_2", "day_10"]
    t = read_all(source)
    check_canonical(source, t)
    assert source.spec.categorical == CATEGORICAL and source.spec.dense == DENSE
    assert t.num_rows == 20
    assert t.column("timestamp").to_pylist() == list(range(20))
    assert t.column("label").to_pylist() == [i % 2 for i in range(20)]
    row = t.to_pylist()[13]  # second file's second row
    assert (row["I1"], row["I2"], row["I4"]) == (-2.0, 11.0, 37.0)
    assert row["I3"] is None  # empty: (13 + 2) % 5 == 0
    assert row["C1"] == "00000007" and row["C2"] is None  # C2 empty: (13 + 1) % 7 == 0
    logged = read_all(Criteo(str(tmp_path), log_dense=True)).to_pylist()[13]
    assert logged["I1"] == pytest.approx(-math.log(3))
    assert logged["I2"] == pytest.approx(math.log(12)) and logged["I3"] is None


def test_criteo_bad_inputs(tmp_path):
    with pytest.raises(DataError, match=r"day_2: label column 'label' must be 0 or 1; row 5"):
        read_all(Criteo(str(criteo_folder(tmp_path / "a", bad_label="2"))))
    write(tmp_path / "b" / "train.txt", ["1\t2\t3"])  # too few columns
    with pytest.raises(DataError, match=r"train\.txt"):
        read_all(Criteo(str(tmp_path / "b")))
    write(tmp_path / "empty" / "notes.md", ["nothing"])
    with pytest.raises(DataError, match="no Criteo"):
        Criteo(str(tmp_path / "empty"))


def test_criteo_prepare_contiguous_blocks(tmp_path):
    source = Criteo(str(criteo_folder(tmp_path / "in")))
    schema = prepare(source, str(tmp_path / "out"), PrepareOptions(stage_by="rows:10"))
    assert schema.total_rows == 20
    assert [(s.start, s.end, s.rows) for s in schema.stages] == [(0, 9, 10), (10, 19, 10)]


# -- Avazu ---------------------------------------------------------------------------------

AV_HEADER = ("id,click,hour,C1,banner_pos,site_id,site_domain,site_category,app_id,app_domain,"
             "app_category,device_id,device_ip,device_model,device_type,device_conn_type,"
             + ",".join(f"C{i}" for i in range(14, 22)))


def avazu_line(i: int, click: str | None = None, hour: str | None = None) -> str:
    if hour is None:  # 2014-10-21 00:00 .. 23:00, then 2014-10-22
        hour = f"141021{i:02d}" if i < 24 else f"141022{i - 24:02d}"
    click = click if click is not None else str(int(i % 4 == 1))
    return ",".join([
        str(10000174058809263569 + i), click, hour, "1005", str(i % 2), f"s{i % 3}",
        "f3845767", "28905ebd", "ecad2386", "7801e8d9", "07d7df22", "a99f214a",
        f"ip{i % 5}", "44956a24", "1", "2", str(15706 + i), "320", "50", "1722", "0",
        "35", "-1", "79",
    ])


def avazu_file(path: Path, n: int = 30, bad: tuple[int, str] | None = None) -> Path:
    rows = [avazu_line(i) for i in range(n)]
    if bad:
        rows[bad[0]] = bad[1]
    return write(path, [AV_HEADER, *rows])


def test_avazu_rows_labels_hours(tmp_path):
    avazu_file(tmp_path / "train.csv")
    write(tmp_path / "test.csv", [AV_HEADER.replace("click,", ""), "1,14103100"])
    source = Avazu(str(tmp_path))
    t = read_all(source)
    check_canonical(source, t)
    assert source.spec.categorical == (*RAW_FIELDS, "hour_of_day", "weekday")
    assert t.num_rows == 30
    rows = t.to_pylist()
    assert rows[0]["timestamp"] == 1413849600 == utc(2014, 10, 21)
    assert rows[5]["timestamp"] == utc(2014, 10, 21, 5)
    assert rows[25]["timestamp"] == utc(2014, 10, 22, 1)
    assert (rows[5]["hour_of_day"], rows[5]["weekday"]) == ("5", "1")  # a Tuesday
    assert (rows[25]["hour_of_day"], rows[25]["weekday"]) == ("1", "2")
    assert [r["label"] for r in rows[:5]] == [0, 1, 0, 0, 0]
    assert rows[7]["site_id"] == "s1" and rows[7]["C14"] == "15713"
    assert rows[7]["C20"] == "-1" and rows[3]["device_ip"] == "ip3"


@pytest.mark.parametrize("hour", ["14102124", "14133100", "14023000", "1410210", ""])
def test_avazu_bad_hour(tmp_path, hour):
    path = avazu_file(tmp_path / "train", bad=(11, avazu_line(11, hour=hour)))
    with pytest.raises(DataError, match=r"train: row 11 has hour that is not a valid YYMMDDHH"):
        read_all(Avazu(str(path)))


def test_avazu_bad_inputs(tmp_path):
    path = avazu_file(tmp_path / "a" / "train", bad=(6, avazu_line(6, click="yes")))
    with pytest.raises(DataError, match=r"train: label column 'click'"):
        read_all(Avazu(str(path)))
    path = avazu_file(tmp_path / "b" / "train", bad=(8, avazu_line(8, click="")))
    with pytest.raises(DataError, match=r"train: label column 'click' must be 0 or 1; row 8"):
        read_all(Avazu(str(path)))
    write(tmp_path / "c" / "train.csv", [AV_HEADER.replace("site_id", "siteid"),
                                         avazu_line(0)])
    with pytest.raises(DataError, match=r"train\.csv: missing column.*site_id"):
        read_all(Avazu(str(tmp_path / "c")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no Avazu"):
        Avazu(str(tmp_path / "empty"))


def test_avazu_prepare(tmp_path):
    source = Avazu(str(avazu_file(tmp_path / "in" / "train.csv")))
    schema = prepare(source, str(tmp_path / "out"), PrepareOptions(stage_by="day"))
    assert schema.total_rows == 30
    assert [s.rows for s in schema.stages] == [24, 6]


# -- the registry --------------------------------------------------------------------------


def test_registry_builds_each_source_with_optional_config(tmp_path):
    for name in ("kuairand", "taobao", "tmall", "criteo", "avazu"):
        assert name in SOURCES
    taobao = write(tmp_path / "tb" / "UserBehavior.csv", taobao_lines(10))
    config = write(tmp_path / "taobao.yaml", ["positive: [buy]"])
    source = build_source("taobao", str(taobao), str(config))
    assert read_all(source).column("label").to_pylist()[:5] == [0, 1, 0, 0, 0]
    assert isinstance(build_source("kuairand", str(kuairand_folder(tmp_path / "kr"))), KuaiRand)
    assert isinstance(build_source("tmall", str(tmall_folder(tmp_path / "tm"))), Tmall)
    assert isinstance(build_source("criteo", str(criteo_folder(tmp_path / "cr"))), Criteo)
    assert isinstance(build_source("avazu", str(avazu_file(tmp_path / "av" / "train"))), Avazu)
    bad = write(tmp_path / "bad.yaml", ["positives: [buy]"])
    with pytest.raises(DataError, match=r"unknown option.*positives"):
        build_source("taobao", str(taobao), str(bad))
